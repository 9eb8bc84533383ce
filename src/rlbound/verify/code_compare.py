"""The comparison rules of code verdicts, applied outside the sandbox to plain data.

* Function outputs, with evalplus's rules (evalplus/eval/__init__.py, v0.3): exact ``==``; else,
  when ``atol`` is set or the expected value is a float or a list of floats (atol 1e-6 then), the
  same type, the same length and ``numpy.allclose(out, expected, rtol=1e-7, atol)``; and evalplus's
  special oracles: HumanEval/32 ``find_zero`` (``|poly(xs, out)| <= atol``), and MBPP+'s
  set-equal, not-None, ``are_equivalent``, ``sum_div``, ``surface_Area`` and
  ``digit_distance_nums`` tasks.
* Standard output: both texts stripped and split into lines, each line stripped; the line counts
  must be equal (a missing line is a failure, never cut off by ``zip``); lines equal as text, or
  token by token as text or as exact decimals (``Decimal``) where both tokens are numbers.

Both sides are values decoded by :mod:`rlbound.verify.code_harness` (builtin types only), so
``==`` here is Python's own, never a method the program defined. This module runs nothing.
"""

from __future__ import annotations

import math
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rlbound.verify.code import TestSpec

# evalplus/eval/_special_oracle.py (the task lists are facts about the benchmark).
MBPP_OUTPUT_NOT_NONE_TASKS = ("check_str", "text_match_three", "text_starta_endb")
MBPP_OUTPUT_SET_EQ_TASKS = ("similar_elements", "find_char_long", "common_in_nested_lists",
                            "extract_singly", "larg_nnum", "intersection_array", "find_dissimilar", "Diff")



_MBPP_SPECIAL = ("are_equivalent", "sum_div", "surface_Area", "digit_distance_nums",
                 *MBPP_OUTPUT_SET_EQ_TASKS, *MBPP_OUTPUT_NOT_NONE_TASKS)


def has_special_oracle(dataset: str, entry_point: str) -> bool:
    """Whether the task's outputs are judged by a special oracle rather than by ``==`` first."""
    return (dataset == "mbpp" and entry_point in _MBPP_SPECIAL) or (dataset == "humaneval" and entry_point == "find_zero")


def _is_floats(x: Any) -> bool:
    if type(x) is float:
        return True
    return isinstance(x, (list, tuple)) and bool(x) and all(type(v) is float for v in x)


def _poly(xs: list, x: float) -> float:
    return sum(coeff * math.pow(x, i) for i, coeff in enumerate(xs))


def _surface_area(base_edge, height):
    slant = math.sqrt((base_edge / 2) ** 2 + height**2)
    return round(base_edge**2 + 4 * (base_edge * slant) / 2)


def _digit_distance(a, b):
    sa, sb = str(a), str(b)
    width = max(len(sa), len(sb))
    return sum(abs(int(x) - int(y)) for x, y in zip(sa.zfill(width), sb.zfill(width)))


def outputs_match(out: Any, expected: Any, spec: "TestSpec", args: Any) -> bool:
    """evalplus's verdict on one function output (see the module docstring)."""
    import numpy as np

    try:
        exact = bool(out == expected)
        if spec.dataset == "mbpp":
            name = spec.entry_point
            if name == "are_equivalent":
                return True
            if name == "sum_div":
                exact = exact or out == 0
            elif name == "surface_Area":
                exact = exact or abs(out - _surface_area(*args)) <= spec.atol
            elif name == "digit_distance_nums":
                exact = exact or out == _digit_distance(*args)
            elif name in MBPP_OUTPUT_SET_EQ_TASKS:
                exact = set(out) == set(expected)
            elif name in MBPP_OUTPUT_NOT_NONE_TASKS:
                exact = out == expected if type(out) is bool else expected == (out is not None)
        if spec.dataset == "humaneval" and spec.entry_point == "find_zero":
            return bool(abs(_poly(*args, out)) <= spec.atol)
        atol = spec.atol if spec.atol or not _is_floats(expected) else 1e-6
        if exact or atol == 0:
            return exact
        if type(out) is not type(expected):
            return False
        if isinstance(expected, (list, tuple)) and len(out) != len(expected):
            return False
        return bool(np.allclose(out, expected, rtol=1e-07, atol=atol))
    except Exception:  # noqa: BLE001 - an output the rule cannot even compare is wrong
        return False


def _decimal(token: str) -> Decimal | None:
    try:
        value = Decimal(token)
    except (InvalidOperation, ValueError):
        return None
    return value if value.is_finite() else None


def stdout_matches(got: str, expected: str) -> bool:
    """The standard-output rule (see the module docstring)."""
    a = [line.strip() for line in got.strip().splitlines()]
    b = [line.strip() for line in expected.strip().splitlines()]
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if x == y:
            continue
        tx, ty = x.split(), y.split()
        if len(tx) != len(ty):
            return False
        for p, q in zip(tx, ty):
            if p != q and (_decimal(p) is None or _decimal(p) != _decimal(q)):
                return False
    return True
