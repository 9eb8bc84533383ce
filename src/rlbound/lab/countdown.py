"""The lab's "countdown" family: reach a target from a few given numbers with + - * /.

A problem is a multiset of 3 to 5 small positive integers and a target, e.g. ``3 4 5 -> 17``.
An answer is an arithmetic expression that uses only the given numbers, each at most once (not
every number has to be used), only ``+ - * /`` and parentheses, and evaluates to the target. Every
division must be exact (an integer result, divisor not zero); negative intermediate values are
allowed; unary minus, decimals and leading zeros are not. Problems have many distinct solutions.

Solution trace (one operation per line, operands are values, the answer line states the
expression)::

    3*4=12
    12+5=17
    #### 3*4+5

The verifier registered as ``countdown`` takes the last ``#### <expression>`` line (an optional
``=<target>`` suffix is accepted) and checks it exactly: expressions are parsed by a small
recursive-descent parser and evaluated with :class:`fractions.Fraction`, never with ``eval``. The
problem's numbers and target travel in the reference string ``numbers=3,4,5;target=17``.

:func:`countdown_solutions` enumerates every solution up to equivalence: two expressions are the
same solution when they have the same normal form, i.e. they differ only by commutativity and
associativity of ``+``/``-`` and of ``*``/``/`` (``(3*4)+5`` = ``5+4*3``). The normal form is
itself a valid answer. It is exhaustive, so it is meant for 5 numbers at most (about a second).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from fractions import Fraction
from typing import Any, Union

from rlbound.verify.base import Verifier, register_verifier

__all__ = [
    "COUNTDOWN_LEVELS",
    "CountdownVerifier",
    "check_countdown",
    "count_countdown_solutions",
    "countdown_canonical",
    "countdown_normal_form",
    "countdown_reference",
    "countdown_solutions",
    "countdown_trace",
    "evaluate_expression",
    "parse_expression",
    "parse_reference",
    "random_countdown",
    "render_expression",
]

#: difficulty -> (how many numbers, largest number)
COUNTDOWN_LEVELS: dict[int, tuple[int, int]] = {1: (3, 10), 2: (4, 10), 3: (4, 25), 4: (5, 25), 5: (5, 50)}
MAX_TARGET = 999
MAX_EXPRESSION_CHARS = 200  # bounds parsing work and recursion depth

# An expression tree: a leaf int, or (op, left, right).
Expr = Union[int, tuple]

_TOKEN_RE = re.compile(r"\s*(?:(\d+)|([-+*/()]))")
_ANSWER_RE = re.compile(r"^[ \t]*####[ \t]*(.*?)[ \t]*$", re.MULTILINE)
_REFERENCE_RE = re.compile(r"^numbers=(\d+(?:,\d+)*);target=(-?\d+)$")
_PREC = {"+": 1, "-": 1, "*": 2, "/": 2}


# ----------------------------------------------------------------------------------- parsing


def _tokens(text: str) -> list[str]:
    tokens, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        if not match:
            raise ValueError(f"unexpected character {text[pos]!r} at {pos}")
        number = match.group(1)
        if number is not None and len(number) > 1 and number[0] == "0":
            raise ValueError(f"number with a leading zero: {number}")
        tokens.append(number if number is not None else match.group(2))
        pos = match.end()
    return tokens


def parse_expression(text: str) -> Expr:
    """The tree of ``text`` (standard precedence, left-associative); ValueError if malformed."""
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ValueError("expression too long")
    tokens = _tokens(text)
    pos = 0

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def take() -> str:
        nonlocal pos
        if pos >= len(tokens):
            raise ValueError("unexpected end of expression")
        pos += 1
        return tokens[pos - 1]

    def expr() -> Expr:
        node = term()
        while peek() in ("+", "-"):
            op = take()
            node = (op, node, term())
        return node

    def term() -> Expr:
        node = factor()
        while peek() in ("*", "/"):
            op = take()
            node = (op, node, factor())
        return node

    def factor() -> Expr:
        token = take()
        if token == "(":
            node = expr()
            if take() != ")":
                raise ValueError("missing closing parenthesis")
            return node
        if token.isdigit():
            return int(token)
        raise ValueError(f"unexpected token {token!r}")

    tree = expr()
    if pos != len(tokens):
        raise ValueError(f"unexpected token {tokens[pos]!r}")
    return tree


def evaluate_expression(tree: Expr) -> Fraction:
    """Exact value of ``tree``; ValueError on division by zero or a non-integer division."""
    if isinstance(tree, int):
        return Fraction(tree)
    op, left, right = tree
    a, b = evaluate_expression(left), evaluate_expression(right)
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if b == 0:
        raise ValueError("division by zero")
    value = a / b
    if value.denominator != 1:
        raise ValueError(f"division {a}/{b} is not exact")
    return value


def _leaves(tree: Expr) -> list[int]:
    if isinstance(tree, int):
        return [tree]
    return _leaves(tree[1]) + _leaves(tree[2])


def render_expression(tree: Expr) -> str:
    """``tree`` as text with the parentheses its structure needs (re-parses to the same value)."""
    if isinstance(tree, int):
        return str(tree)
    op, left, right = tree
    left_text, right_text = render_expression(left), render_expression(right)
    if not isinstance(left, int) and _PREC[left[0]] < _PREC[op]:
        left_text = f"({left_text})"
    if not isinstance(right, int):
        child = right[0]
        if _PREC[child] < _PREC[op] or (_PREC[child] == _PREC[op] and not (child == op and op in "+*")):
            right_text = f"({right_text})"
    return f"{left_text}{op}{right_text}"


# ------------------------------------------------------------------------- checking answers


def countdown_reference(numbers: list[int] | tuple[int, ...], target: int) -> str:
    """The reference string of a problem: ``numbers=3,4,5;target=17``."""
    return f"numbers={','.join(str(n) for n in numbers)};target={target}"


def parse_reference(reference: str) -> tuple[list[int], int]:
    match = _REFERENCE_RE.match(reference.strip())
    if not match:
        raise ValueError(f"not a countdown reference: {reference!r}")
    return [int(n) for n in match.group(1).split(",")], int(match.group(2))


def check_countdown(numbers: list[int] | tuple[int, ...], target: int, answer: str) -> bool:
    """Whether ``answer`` (an expression, optionally ``=<target>``) solves the problem exactly."""
    text = answer.strip()
    if text.count("=") == 1:
        text, stated = text.split("=")
        if stated.strip() != str(target):
            return False
    try:
        tree = parse_expression(text)
        used = Counter(_leaves(tree))
        if used - Counter(numbers):  # a number not given, or used more often than given
            return False
        return evaluate_expression(tree) == target
    except (ValueError, RecursionError):
        return False


@register_verifier("countdown")
class CountdownVerifier(Verifier):
    """Exact check of a countdown answer against ``numbers=..;target=..``; see the module doc."""

    name = "countdown"
    cheap = True  # bounded string work: the pool runs it inline

    def extract(self, completion: str) -> str | None:
        answers = _ANSWER_RE.findall(completion)
        return answers[-1] if answers and answers[-1] else None

    def normalise(self, answer: str) -> str:
        return "".join(answer.split())

    def equivalent(self, reference: str, answer: str) -> bool:
        numbers, target = parse_reference(reference)
        return check_countdown(numbers, target, answer)

    def settings(self) -> dict[str, Any]:
        return {"verifier": self.name}


# --------------------------------------------------------------------------- traces


def countdown_trace(problem_numbers: list[int] | tuple[int, ...], target: int, solution_expr: str) -> str:
    """The step-by-step trace of ``solution_expr``; ValueError if it is not a solution."""
    if not check_countdown(problem_numbers, target, solution_expr):
        raise ValueError(f"{solution_expr!r} does not make {target} from {list(problem_numbers)}")
    lines: list[str] = []

    def walk(tree: Expr) -> int:
        if isinstance(tree, int):
            return tree
        op, left, right = tree
        a, b = walk(left), walk(right)
        value = int(evaluate_expression((op, a, b)))
        lines.append(f"{a}{op}{b}={value}")
        return value

    walk(parse_expression(solution_expr))
    return "\n".join(lines + [f"#### {''.join(solution_expr.split())}"])


# ------------------------------------------------------------------------ generation


def countdown_canonical(numbers: list[int] | tuple[int, ...], target: int) -> str:
    """Canonical form of a problem (order of the numbers does not matter)."""
    return f"{','.join(str(n) for n in sorted(numbers))}->{target}"


def _random_tree(rng: random.Random, numbers: list[int]) -> tuple[Expr, int] | None:
    pool: list[tuple[Expr, int]] = [(n, n) for n in numbers]
    while len(pool) > 1:
        i, j = rng.sample(range(len(pool)), 2)
        (ta, va), (tb, vb) = pool[i], pool[j]
        options: list[tuple[Expr, int]] = []
        if va + vb <= MAX_TARGET:
            options.append((("+", ta, tb), va + vb))
        if va != vb:
            big, small = ((ta, va), (tb, vb)) if va > vb else ((tb, vb), (ta, va))
            options.append((("-", big[0], small[0]), big[1] - small[1]))
            if small[1] > 1 and big[1] % small[1] == 0:
                options.append((("/", big[0], small[0]), big[1] // small[1]))
        if va > 1 and vb > 1 and va * vb <= MAX_TARGET:
            options.append((("*", ta, tb), va * vb))
        if not options:
            return None
        pool = [p for k, p in enumerate(pool) if k not in (i, j)] + [rng.choice(options)]
    return pool[0]


def random_countdown(rng: random.Random, difficulty: int) -> tuple[list[int], int, str]:
    """A solvable problem ``(numbers, target, solution expression)`` using all the numbers."""
    count, largest = COUNTDOWN_LEVELS[difficulty]
    while True:
        numbers = [rng.randint(1, largest) for _ in range(count)]
        built = _random_tree(rng, numbers)
        if built is None:
            continue
        tree, target = built
        if 2 <= target <= MAX_TARGET and target not in numbers:
            return numbers, target, render_expression(tree)


# ------------------------------------------------------------------------- enumeration

# Enumeration node: (value, kind, first, second); kind "n": leaf, first = (text,);
# "s": sum, first/second = positive/negative terms; "p": product, first/second = num/den factors.


def _text(node: tuple) -> str:
    _, kind, first, second = node
    if kind == "n":
        return first[0]
    if kind == "s":
        return "+".join(sorted(first)) + "".join("-" + t for t in sorted(second))
    return "*".join(sorted(first)) + "".join("/" + f for f in sorted(second))


def _terms(node: tuple, text: str) -> tuple[tuple, tuple]:
    return (node[2], node[3]) if node[1] == "s" else ((text,), ())


def _factors(node: tuple, text: str) -> tuple[tuple, tuple]:
    if node[1] == "p":
        return node[2], node[3]
    return ((f"({text})",), ()) if node[1] == "s" else ((text,), ())


def _join(x: tuple, xt: str, y: tuple, yt: str, op: str, value: int) -> tuple:
    """The enumeration node of ``x op y`` (``op`` in ``+ - * /``) whose value is ``value``."""
    if op in "+-":
        (px, nx), (py, ny) = _terms(x, xt), _terms(y, yt)
        return (value, "s", px + py, nx + ny) if op == "+" else (value, "s", px + ny, nx + py)
    (px, nx), (py, ny) = _factors(x, xt), _factors(y, yt)
    return (value, "p", px + py, nx + ny) if op == "*" else (value, "p", px + ny, nx + py)


def _combine(x: tuple, xt: str, y: tuple, yt: str, want: int | None, out: dict) -> None:
    """Add every valid ``x op y`` / ``y op x`` to ``out`` (only those equal to ``want`` if set)."""
    vx, vy = x[0], y[0]
    candidates = [(False, "+", vx + vy), (False, "-", vx - vy), (True, "-", vy - vx), (False, "*", vx * vy)]
    if vy != 0 and vx % vy == 0:
        candidates.append((False, "/", vx // vy))
    if vx != 0 and vy % vx == 0:
        candidates.append((True, "/", vy // vx))
    for swap, op, value in candidates:
        if want is not None and value != want:
            continue
        node = _join(y, yt, x, xt, op, value) if swap else _join(x, xt, y, yt, op, value)
        text = _text(node)
        if text not in out:
            out[text] = node


def countdown_normal_form(expression: str) -> str:
    """The normal form of a valid expression: equal for the same solution up to reordering.

    ``3*4+5``, ``5+(4*3)`` and ``5+4*3`` share one normal form; :func:`countdown_solutions`
    lists normal forms. ValueError if ``expression`` is malformed or divides inexactly.
    """

    def walk(tree: Expr) -> tuple[tuple, str]:
        if isinstance(tree, int):
            return (tree, "n", (str(tree),), ()), str(tree)
        op, left, right = tree
        (x, xt), (y, yt) = walk(left), walk(right)
        value = int(evaluate_expression((op, x[0], y[0])))
        node = _join(x, xt, y, yt, op, value)
        return node, _text(node)

    return walk(parse_expression(expression))[1]


def countdown_solutions(
    numbers: list[int] | tuple[int, ...],
    target: int,
    limit: int | None = None,
    max_numbers: int | None = None,
) -> list[str]:
    """All distinct solutions (normal forms), shortest first, at most ``limit`` of them.

    ``max_numbers`` bounds how many of the numbers a solution may use (default: all). Each
    returned string is a valid answer (:func:`check_countdown` accepts it).
    """
    k = len(numbers)
    if k > 6:
        raise ValueError("countdown_solutions enumerates at most 6 numbers")
    top = k if max_numbers is None else min(k, max_numbers)
    table: dict[int, dict[str, tuple]] = {}
    found: set[str] = set()
    for mask in sorted(range(1, 1 << k), key=lambda m: (bin(m).count("1"), m)):
        size = bin(mask).count("1")
        if size > top:
            continue
        if size == 1:
            n = numbers[mask.bit_length() - 1]
            table[mask] = {str(n): (n, "n", (str(n),), ())}
        else:
            # the largest masks feed nothing bigger: only keep what hits the target
            want = target if size == top else None
            out: dict[str, tuple] = {}
            sub = (mask - 1) & mask
            while sub:
                other = mask ^ sub
                if sub < other:
                    for xt, x in table[sub].items():
                        for yt, y in table[other].items():
                            _combine(x, xt, y, yt, want, out)
                sub = (sub - 1) & mask
            table[mask] = out
        found.update(text for text, node in table[mask].items() if node[0] == target)
    solutions = sorted(found, key=lambda s: (len(s), s))
    return solutions if limit is None else solutions[:limit]


def count_countdown_solutions(
    numbers: list[int] | tuple[int, ...], target: int, max_numbers: int | None = None
) -> int:
    """How many distinct solutions (normal forms) the problem has."""
    return len(countdown_solutions(numbers, target, max_numbers=max_numbers))
