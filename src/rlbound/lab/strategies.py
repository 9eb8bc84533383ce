"""Problem classes and solution strategies of the lab world: how corpus traces get written.

A *strategy* is a way of writing a solution trace. Each family has its own, and each strategy is
*capable* of some problem classes (structurally able to solve them); the corpus knobs choose, per
strategy, which of those it actually *solves* in the corpus. On a problem it does not solve, a
strategy writes its failed attempt, ending in a wrong answer, so the model sees the strategy fail
there.

Countdown classes (:func:`countdown_shape`):

* ``chain``: some solution combines a running value with one given number at a time,
  ``((a∘b)∘c)∘d`` in some order of a subset of the numbers;
* ``tree``: every solution needs two partial results combined, e.g. ``(a∘b)∘(c∘d)``.

Countdown strategies:

* ``chain`` (capable: chain): writes a chain solution step by step;
* ``search`` (capable: chain, tree): explicit search with backtracking. It writes one to
  ``max_dead_ends`` failed attempts, each followed by a line ``back`` (the lab's backtracking
  marker), then the solution, which may combine two partial results.

Programs classes: ``short`` (at most 3 statements) and ``long``. Strategies:

* ``stepwise`` (capable: short, long): one line per statement with the operands' values;
* ``direct`` (capable: short, long): the answer line alone, with no working.

Wrong steps (the ``error_rate`` knob): each written step is wrong with that probability, and a
wrong step makes the answer wrong (unless, in programs, the printed value does not depend on it). In countdown a wrong step writes another operator with the
original result (``3+4=12``), and the answer expression follows the written operators. In
programs a wrong step writes a value off by 1-9, and later steps use it. A failed attempt has at
least one wrong step or misses the target. At ``error_rate=0`` every trace of a class the
strategy solves verifies correct.

What it does not do: draw problems or mix strategies (that is :mod:`rlbound.lab.corpus`).
"""

from __future__ import annotations

import random
from functools import lru_cache

from rlbound.lab.countdown import check_countdown, countdown_solutions, parse_expression, render_expression
from rlbound.lab.programs import parse_program, run_program

__all__ = [
    "CAPABLE",
    "CLASSES",
    "FAMILY_OF_STRATEGY",
    "chain_solution",
    "countdown_shape",
    "program_class",
    "write_trace",
]

CLASSES: dict[str, tuple[str, ...]] = {"countdown": ("chain", "tree"), "programs": ("short", "long")}
CAPABLE: dict[str, tuple[str, ...]] = {
    "chain": ("chain",),
    "search": ("chain", "tree"),
    "stepwise": ("short", "long"),
    "direct": ("short", "long"),
}
FAMILY_OF_STRATEGY = {"chain": "countdown", "search": "countdown", "stepwise": "programs", "direct": "programs"}
BACKTRACK_MARKER = "back"
SHORT_PROGRAM_STATEMENTS = 3
_OPS = "+-*/"

# ------------------------------------------------------------------------------ countdown


def _moves(tree, value: int, number: int):
    """Every valid ``value ∘ number`` / ``number ∘ value``: (tree, value), bigger operand first."""
    yield ("+", tree, number), value + number
    yield ("*", tree, number), value * number
    if value != number:
        big, small = ((tree, value), (number, number)) if value > number else ((number, number), (tree, value))
        yield ("-", big[0], small[0]), big[1] - small[1]
        if small[1] > 1 and big[1] % small[1] == 0:
            yield ("/", big[0], small[0]), big[1] // small[1]


def chain_solution(numbers, target: int, rng: random.Random | None = None):
    """A chain solution as an expression tree (an int leaf or ``(op, left, right)``), or None.

    Without ``rng`` the search order is fixed (the first solution found, cached); with it,
    numbers and moves are tried in a random order, so different draws give different solutions.
    """
    numbers = tuple(numbers)
    if rng is None:
        return _first_chain(numbers, target)

    def shuffled(items):
        items = list(items)
        rng.shuffle(items)
        return items

    return _search_chain(numbers, target, shuffled, skip_repeats=False)


@lru_cache(maxsize=65536)
def _first_chain(numbers: tuple[int, ...], target: int):
    return _search_chain(numbers, target, list, skip_repeats=True)


def _search_chain(numbers: tuple[int, ...], target: int, order, skip_repeats: bool):
    """Depth-first search over chains: ``order(items)`` is the order numbers and moves are tried
    in; ``skip_repeats`` skips a number equal to one already tried at the same depth (the same
    subtree, so the same outcome)."""

    def numbers_to_try(rest):
        tried = set()
        for i in order(range(len(rest))):
            if skip_repeats and rest[i] in tried:
                continue
            tried.add(rest[i])
            yield i

    def dfs(tree, value, rest):
        if value == target and not isinstance(tree, int):
            return tree
        for i in numbers_to_try(rest):
            for new_tree, new_value in order(_moves(tree, value, rest[i])):
                found = dfs(new_tree, new_value, rest[:i] + rest[i + 1:])
                if found is not None:
                    return found
        return None

    for i in numbers_to_try(numbers):
        found = dfs(numbers[i], numbers[i], numbers[:i] + numbers[i + 1:])
        if found is not None:
            return found
    return None


def countdown_shape(numbers, target: int) -> str:
    """``"chain"`` or ``"tree"`` (see the module doc)."""
    return "chain" if _first_chain(tuple(numbers), target) is not None else "tree"


def _random_chain(rng: random.Random, numbers: list[int]):
    """A chain over all the numbers in a random order with random valid moves: (tree, value)."""
    order = list(numbers)
    rng.shuffle(order)
    tree, value = order[0], order[0]
    for number in order[1:]:
        tree, value = rng.choice(list(_moves(tree, value, number)))
    return tree, value


def _written(tree, rng: random.Random, error_rate: float) -> tuple[list[str], str]:
    """The step lines of ``tree`` (post-order) and the answer expression they stand for.

    A step is wrong with probability ``error_rate``: it shows another operator with the true
    result, and the answer expression carries that operator.
    """
    lines: list[str] = []

    def walk(node):
        if isinstance(node, int):
            return node, node
        op, left, right = node
        (a, a_ans), (b, b_ans) = walk(left), walk(right)
        value = a + b if op == "+" else a - b if op == "-" else a * b if op == "*" else a // b
        if error_rate and rng.random() < error_rate:
            op = rng.choice([o for o in _OPS if o != op])
        lines.append(f"{a}{op}{b}={value}")
        return value, (op, a_ans, b_ans)

    _, answer = walk(tree)
    return lines, render_expression(answer)


def _countdown_trace(strategy: str, numbers: list[int], target: int, solve: bool,
                     rng: random.Random, error_rate: float, max_dead_ends: int) -> str:
    lines: list[str] = []
    if strategy == "search":
        for _ in range(rng.randint(1, max_dead_ends)):
            lines += _written(_dead_end(rng, numbers, target), rng, error_rate)[0] + [BACKTRACK_MARKER]
    if not solve:
        for _ in range(50):  # a failed attempt: its answer must not solve the problem
            body, expression = _written(_dead_end(rng, numbers, target), rng, error_rate)
            if not check_countdown(numbers, target, expression):
                break
        return "\n".join(lines + body + [f"#### {expression}"])
    tree = chain_solution(numbers, target, rng) if strategy == "chain" else None
    if tree is None:
        tree = parse_expression(rng.choice(countdown_solutions(numbers, target, limit=8)))
    body, expression = _written(tree, rng, error_rate)
    return "\n".join(lines + body + [f"#### {expression}"])


def _dead_end(rng: random.Random, numbers: list[int], target: int):
    for _ in range(50):
        tree, value = _random_chain(rng, numbers)
        if value != target:
            return tree
    return tree


# ------------------------------------------------------------------------------- programs


def program_class(program: str) -> str:
    """``"short"`` (at most 3 statements) or ``"long"``."""
    statements, _ = parse_program(program)
    return "short" if len(statements) <= SHORT_PROGRAM_STATEMENTS else "long"


def _program_trace(strategy: str, program: str, solve: bool, rng: random.Random,
                   error_rate: float) -> str:
    statements, printed = parse_program(program)
    env: dict[str, int] = {}
    lines = []
    forced = -1 if solve else rng.randrange(len(statements))
    for k, (target, a, op, b) in enumerate(statements):
        va = int(a) if a.isdigit() else env[a]
        if op is None:
            value, text = va, (f"{target}={a}" if a.isdigit() else f"{target}={a}={va}")
        else:
            vb = int(b) if b.isdigit() else env[b]
            value = va + vb if op == "+" else va - vb if op == "-" else va * vb
            text = None
        if k == forced or (op is not None and rng.random() < error_rate):
            value = value + rng.choice([-1, 1]) * rng.randint(1, 9)
            if op is None:
                text = f"{target}={a}={value}" if not a.isdigit() else f"{target}={value}"
        if text is None:
            text = f"{target}={a}{op}{b}={va}{op}{vb}={value}"
        env[target] = value
        lines.append(text)
    answer = env[printed]
    if not solve and answer == run_program(program):  # the slip cancelled out: miss anyway
        answer += rng.choice([-1, 1]) * rng.randint(1, 9)
    return "\n".join((lines if strategy == "stepwise" else []) + [f"#### {answer}"])


# ----------------------------------------------------------------------------------- entry


def write_trace(strategy: str, problem, solve: bool, rng: random.Random, error_rate: float = 0.0,
                max_dead_ends: int = 2) -> str:
    """The trace of ``strategy`` on a lab ``problem`` (a countdown or programs :class:`Problem`).

    ``solve=False`` writes the strategy's failed attempt. ``solve=True`` on a class the strategy
    is not capable of is a ValueError.
    """
    if strategy not in CAPABLE:
        raise ValueError(f"unknown strategy {strategy!r}; choose from {sorted(CAPABLE)}")
    meta = problem.metadata
    if FAMILY_OF_STRATEGY[strategy] != meta["family"]:
        raise ValueError(f"strategy {strategy!r} writes {FAMILY_OF_STRATEGY[strategy]} traces, "
                         f"not {meta['family']}")
    if solve and meta["class"] not in CAPABLE[strategy]:
        raise ValueError(f"strategy {strategy!r} cannot solve {meta['class']!r} problems")
    if meta["family"] == "countdown":
        return _countdown_trace(strategy, list(meta["numbers"]), meta["target"], solve, rng,
                                error_rate, max_dead_ends)
    return _program_trace(strategy, problem.prompt, solve, rng, error_rate)
