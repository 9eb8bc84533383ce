"""The lab's "programs" family: evaluate a small straight-line program step by step.

A program is a ``;``-separated list of assignments ending with ``print(x)``, e.g.
``a=3;b=a*2;a=b+1;print(a)``. A statement is ``x=<int>``, ``x=y<op><int>`` or ``x=y<op>z`` with
``op`` in ``+ - *``; variables are single letters ``a``..``e`` and may be reassigned. Every value
stays in 0..999. The trace writes each assignment with its operands' current values and ends with
the printed value, graded by the ``exact`` verifier::

    a=3
    b=a*2=3*2=6
    a=b+1=6+1=7
    #### 7

Difficulty ``d`` (1..6) gives ``d+1`` statements over ``min(d+1, 2+d//2)`` variables.
"""

from __future__ import annotations

import random
import re

__all__ = ["PROGRAM_MAX_DIFFICULTY", "parse_program", "program_trace", "random_program", "run_program"]

PROGRAM_MAX_DIFFICULTY = 6
MAX_VALUE = 999
VARIABLES = "abcde"

_ASSIGN_RE = re.compile(r"^([a-e])=([a-e]|\d+)(?:([-+*])([a-e]|\d+))?$")
_PRINT_RE = re.compile(r"^print\(([a-e])\)$")


def parse_program(program: str) -> tuple[list[tuple[str, str, str | None, str | None]], str]:
    """``(statements, printed variable)``; each statement is ``(target, a, op, b)``."""
    parts = program.split(";")
    statements = []
    for part in parts[:-1]:
        match = _ASSIGN_RE.match(part)
        if not match:
            raise ValueError(f"not a statement: {part!r}")
        statements.append((match[1], match[2], match[3], match[4]))
    match = _PRINT_RE.match(parts[-1])
    if not match:
        raise ValueError(f"program must end with print(x): {program!r}")
    return statements, match[1]


def _value(operand: str, env: dict[str, int]) -> int:
    if operand.isdigit():
        return int(operand)
    if operand not in env:
        raise ValueError(f"variable {operand} used before assignment")
    return env[operand]


def _apply(op: str, a: int, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def program_trace(program: str) -> str:
    """The step-by-step trace of ``program`` ending ``#### <printed value>``."""
    statements, printed = parse_program(program)
    env: dict[str, int] = {}
    lines = []
    for target, a, op, b in statements:
        if op is None:
            env[target] = _value(a, env)
            lines.append(f"{target}={a}" if a.isdigit() else f"{target}={a}={env[target]}")
            continue
        va, vb = _value(a, env), _value(b, env)
        env[target] = _apply(op, va, vb)
        lines.append(f"{target}={a}{op}{b}={va}{op}{vb}={env[target]}")
    return "\n".join(lines + [f"#### {_value(printed, env)}"])


def run_program(program: str) -> int:
    """The value ``program`` prints."""
    statements, printed = parse_program(program)
    env: dict[str, int] = {}
    for target, a, op, b in statements:
        env[target] = _value(a, env) if op is None else _apply(op, _value(a, env), _value(b, env))
    return _value(printed, env)


def random_program(rng: random.Random, difficulty: int) -> str:
    """A random program of the given difficulty whose values all stay in 0..MAX_VALUE."""
    n_statements = difficulty + 1
    names = VARIABLES[: min(n_statements, 2 + difficulty // 2)]
    big = 9 if difficulty <= 2 else 20
    env: dict[str, int] = {}
    statements: list[str] = []
    last = ""
    while len(statements) < n_statements:
        target = rng.choice(names)
        kind = "const" if not env or (len(env) < len(names) and rng.random() < 0.3) else rng.choice(
            ["var_const", "var_var", "var_var"]
        )
        if kind == "const":
            value = rng.randint(1, big)
            statements.append(f"{target}={value}")
            env[target], last = value, target
            continue
        a = rng.choice(sorted(env))
        op = rng.choice("+-*")
        if kind == "var_const" or len(env) < 2:
            b_text = str(rng.randint(2, 9) if op == "*" else rng.randint(1, big))
            vb = int(b_text)
        else:
            b_text = rng.choice([v for v in sorted(env) if v != a] or [a])
            vb = env[b_text]
        if op == "*" and vb > 9 and env[a] > 9:
            continue
        value = _apply(op, env[a], vb)
        if not 0 <= value <= MAX_VALUE:
            continue
        statements.append(f"{target}={a}{op}{b_text}")
        env[target], last = value, target
    printed = last if rng.random() < 0.6 else rng.choice(sorted(env))
    return ";".join(statements + [f"print({printed})"])
