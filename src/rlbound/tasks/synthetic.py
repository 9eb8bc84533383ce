"""Built-in synthetic task: multi-step integer arithmetic with a written chain of thought.

Each problem is a left-nested expression such as ``((7+5)*3)-4``; its solution trace evaluates it
one operation per line and ends with a GSM8K-style answer line::

    7+5=12
    12*3=36
    36-4=32
    #### 32

Generation is seeded and deterministic: problem ``i`` of seed ``s`` depends only on
``(s, difficulty, i)``, so any prefix of a larger set equals the smaller set. ``difficulty`` is the
number of operations (1 to 8); operands grow with it and every intermediate value stays in
0..999 so that a small character-level model can learn the task. The reference answer is exact and
graded by the ``exact`` verifier. The trace is kept in ``metadata["solution"]`` for training.
"""

from __future__ import annotations

import random

from rlbound.errors import RlboundError
from rlbound.tasks.base import Problem, Task, register_task

MAX_VALUE = 999
MAX_DIFFICULTY = 8


def _step(rng: random.Random, value: int, max_operand: int) -> tuple[str, int, int]:
    """Pick one operation applicable to ``value`` that keeps the result in 0..MAX_VALUE."""
    while True:
        op = rng.choice("+-*")
        if op == "+":
            b = rng.randint(1, max_operand)
            if value + b <= MAX_VALUE:
                return op, b, value + b
        elif op == "-":
            if value >= 1:
                b = rng.randint(1, min(max_operand, value))
                return op, b, value - b
        else:
            b = rng.randint(2, min(max_operand, 9))
            if value * b <= MAX_VALUE:
                return op, b, value * b


def arithmetic_problem(seed: int, difficulty: int, index: int) -> Problem:
    """Problem ``index`` of the arithmetic family for ``seed`` and ``difficulty``."""
    rng = random.Random(f"arith/{seed}/{difficulty}/{index}")
    max_operand = 9 if difficulty <= 2 else 20 if difficulty <= 4 else 50
    value = rng.randint(1, max_operand)
    expression = str(value)
    lines = []
    for _ in range(difficulty):
        op, b, result = _step(rng, value, max_operand)
        lines.append(f"{value}{op}{b}={result}")
        expression = f"({expression}){op}{b}" if "(" in expression or any(
            c in expression for c in "+-*"
        ) else f"{expression}{op}{b}"
        value = result
    lines.append(f"#### {value}")
    return Problem(
        id=f"arith-d{difficulty}-s{seed}-{index}",
        prompt=expression,
        reference=str(value),
        metadata={"difficulty": difficulty, "solution": "\n".join(lines)},
    )


@register_task("arithmetic")
def arithmetic_task(n: int = 100, seed: int = 0, difficulty: int = 3, offset: int = 0) -> Task:
    """``n`` arithmetic problems (indices ``offset .. offset+n-1``) at the given difficulty."""
    if not 1 <= difficulty <= MAX_DIFFICULTY:
        raise RlboundError(f"arithmetic difficulty must be 1..{MAX_DIFFICULTY}, got {difficulty}")
    if n < 1:
        raise RlboundError(f"arithmetic task needs n >= 1 problems, got {n}")
    problems = tuple(arithmetic_problem(seed, difficulty, offset + i) for i in range(n))
    return Task(
        name="arithmetic",
        problems=problems,
        verifier="exact",
        template="plain",
        options={"n": n, "seed": seed, "difficulty": difficulty, "offset": offset},
    )
