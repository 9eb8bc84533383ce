"""The lab world's task families: countdown and programs (generation, splits, traces, verifier)."""

from __future__ import annotations

import itertools
import re

import pytest

from rlbound.engines.tiny.tokenizer import DEFAULT_CHARS
from rlbound.errors import RlboundError
from rlbound.lab.countdown import (
    COUNTDOWN_LEVELS,
    CountdownVerifier,
    check_countdown,
    count_countdown_solutions,
    countdown_normal_form,
    countdown_reference,
    countdown_solutions,
    countdown_trace,
)
from rlbound.lab.programs import PROGRAM_MAX_DIFFICULTY, program_trace
from rlbound.lab.world import countdown_task, programs_task, split_of

ALPHABET = set(DEFAULT_CHARS)


def _rendered(prompt: str) -> str:
    return f"Q: {prompt}\nA: "  # the "plain" template


# ------------------------------------------------------------------------ determinism/splits


def test_generation_is_deterministic_and_prefix_stable():
    for factory in (countdown_task, programs_task):
        a = factory(n=30, seed=3, difficulty=2, split="train")
        b = factory(n=30, seed=3, difficulty=2, split="train")
        assert a.problems == b.problems
        prefix = factory(n=10, seed=3, difficulty=2, split="train")
        assert prefix.problems == a.problems[:10]
        shifted = factory(n=5, seed=3, difficulty=2, split="train", offset=10)
        assert shifted.problems == a.problems[10:15]
        other = factory(n=30, seed=4, difficulty=2, split="train")
        assert other.problems != a.problems


@pytest.mark.parametrize("family,factory,difficulty", [
    ("countdown", countdown_task, 1),
    ("countdown", countdown_task, 3),
    ("programs", programs_task, 1),
    ("programs", programs_task, 4),
])
def test_train_and_test_splits_are_disjoint(family, factory, difficulty):
    train = factory(n=2000, seed=0, difficulty=difficulty, split="train")
    test = factory(n=2000, seed=0, difficulty=difficulty, split="test")
    train_forms = {p.metadata["canonical"] for p in train.problems}
    test_forms = {p.metadata["canonical"] for p in test.problems}
    assert not train_forms & test_forms
    assert all(split_of(family, form) == "train" for form in train_forms)
    assert all(split_of(family, form) == "test" for form in test_forms)
    assert len(test_forms) > 50  # the split is not degenerate
    # the canonical form really identifies the problem
    if family == "countdown":
        for p in test.problems[:50]:
            assert p.metadata["canonical"] == ",".join(map(str, sorted(p.metadata["numbers"]))) + (
                f"->{p.metadata['target']}"
            )
    else:
        assert all(p.metadata["canonical"] == p.prompt for p in test.problems)


def test_bad_options_are_refused():
    with pytest.raises(RlboundError):
        countdown_task(n=3, difficulty=max(COUNTDOWN_LEVELS) + 1)
    with pytest.raises(RlboundError):
        programs_task(n=3, difficulty=0)
    with pytest.raises(RlboundError):
        countdown_task(n=3, split="valid")


def test_tasks_registered_under_their_names():
    from rlbound.tasks.base import TASKS
    from rlbound.verify.base import VERIFIERS

    assert TASKS.get("countdown") is countdown_task
    assert TASKS.get("programs") is programs_task
    assert VERIFIERS.get("countdown") is CountdownVerifier
    task = countdown_task(n=2)
    assert (task.name, task.verifier, task.template) == ("countdown", "countdown", "plain")
    assert task.options == {"n": 2, "seed": 0, "difficulty": 2, "split": "test", "offset": 0,
                            "shape": None}
    assert programs_task(n=2).verifier == "exact"


# ----------------------------------------------------------------------------- countdown


def test_countdown_traces_verify_and_fit_the_tiny_model():
    verifier = CountdownVerifier()
    for difficulty, (count, largest) in COUNTDOWN_LEVELS.items():
        for p in countdown_task(n=150, seed=1, difficulty=difficulty).problems:
            numbers, target = p.metadata["numbers"], p.metadata["target"]
            assert len(numbers) == count and all(1 <= x <= largest for x in numbers)
            assert target not in numbers
            assert p.reference == countdown_reference(numbers, target)
            trace = p.metadata["solution"]
            answer = verifier.extract(trace)
            assert answer is not None and verifier.equivalent(p.reference, answer)
            # each step line is arithmetic that is actually right, ending at the target
            steps = trace.splitlines()[:-1]
            assert len(steps) == count - 1
            for line in steps:
                a, op, b, value = re.fullmatch(r"(-?\d+)([-+*/])(-?\d+)=(-?\d+)", line).groups()
                a, b, value = int(a), int(b), int(value)
                expected = {"+": a + b, "-": a - b, "*": a * b}.get(op)
                if op == "/":
                    assert b != 0 and a % b == 0
                    expected = a // b
                assert expected == value
            assert int(steps[-1].split("=")[-1]) == target
            text = _rendered(p.prompt) + trace
            assert set(text) <= ALPHABET
            assert len(text) < 200


@pytest.mark.parametrize("answer,correct", [
    ("3*4+5", True),
    ("(3*4)+5", True),
    ("5+4*3", True),
    (" ( 3 * 4 ) + 5 ", True),
    ("4*5-3", True),
    ("3*4+5=17", True),
    ("3*4+5=18", False),   # states a wrong result
    ("17", False),         # the target itself is not a given number
    ("3*4+5+0", False),    # 0 is not given
    ("3*5+4-2", False),    # 2 is not given
    ("4*4+1", False),      # 4 used twice, 1 not given
    ("3*4+4+1", False),    # right value, number reused
    ("3*5+4-2*1", False),
    ("3*(4+5)", False),    # well formed, wrong value
    ("3*4+5+3-3", False),  # 3 used three times though the value is right
    ("4*5-03", False),     # leading zero
    ("4*5+-3", False),     # unary minus
    ("4*5-3.0", False),    # decimals
    ("(3*4+5", False),     # unbalanced
    ("3*4+5)", False),
    ("3**4", False),
    ("3*4 5", False),
    ("__import__('os')", False),
    ("", False),
])
def test_countdown_verifier_hand_checked(answer, correct):
    verifier = CountdownVerifier()
    reference = countdown_reference([3, 4, 5], 17)
    assert verifier.equivalent(reference, answer) is correct


def test_countdown_division_must_be_exact_and_numbers_are_a_multiset():
    # 7/2*4 = 14 only with a fractional intermediate: refused; 4*7/2 is exact: accepted.
    assert not check_countdown([7, 2, 4], 14, "7/2*4")
    assert check_countdown([7, 2, 4], 14, "4*7/2")
    assert not check_countdown([6, 3, 3], 2, "6/(3-3)")  # division by zero
    assert check_countdown([6, 3, 3], 6, "6/3*3")
    assert check_countdown([3, 3, 6], 6, "3+3")  # duplicates may be used as often as given
    assert not check_countdown([3, 4, 6], 6, "3+3")
    assert check_countdown([2, 5, 8], 5, "2-5+8")  # negative intermediate is allowed
    verifier = CountdownVerifier()
    assert verifier.extract("2*3=6\n#### 1+2\nmore\n#### 2*3 ") == "2*3"
    assert verifier.extract("no answer line") is None
    assert verifier.extract("####   \n") is None
    with pytest.raises(ValueError):
        verifier.equivalent("17", "3*4+5")  # a malformed reference is an error, not a verdict
    assert verifier.normalise(" (3 * 4)+5") == "(3*4)+5"


def test_countdown_trace_format_and_refusal():
    assert countdown_trace([3, 4, 5], 17, "(3*4)+5") == "3*4=12\n12+5=17\n#### (3*4)+5"
    assert countdown_trace([8, 2, 6], 10, "8/2+6") == "8/2=4\n4+6=10\n#### 8/2+6"
    with pytest.raises(ValueError):
        countdown_trace([3, 4, 5], 17, "3*4+4")


def _brute_force_normal_forms(numbers, target):
    def trees(items):
        if len(items) == 1:
            yield str(items[0])
            return
        for i in range(1, len(items)):
            for left in trees(items[:i]):
                for right in trees(items[i:]):
                    for op in "+-*/":
                        yield f"({left}){op}({right})"

    found = set()
    for k in range(1, len(numbers) + 1):
        for perm in itertools.permutations(numbers, k):
            for expression in trees(list(perm)):
                if check_countdown(numbers, target, expression):
                    found.add(countdown_normal_form(expression))
    return found


@pytest.mark.parametrize("numbers,target", [([3, 4, 5], 17), ([2, 3, 7, 10], 24), ([4, 4, 2, 8], 16)])
def test_countdown_solutions_match_brute_force(numbers, target):
    solutions = countdown_solutions(numbers, target)
    assert set(solutions) == _brute_force_normal_forms(numbers, target)
    assert len(solutions) == len(set(solutions)) == count_countdown_solutions(numbers, target)
    assert all(check_countdown(numbers, target, s) for s in solutions)
    assert solutions == sorted(solutions, key=lambda s: (len(s), s))
    assert countdown_solutions(numbers, target, limit=2) == solutions[:2]


def test_countdown_solutions_small_cases_and_normal_form():
    assert countdown_solutions([3, 4, 5], 17) == ["3*4+5", "4*5-3"]
    assert countdown_solutions([1, 2, 3], 6) == ["2*3", "1*2*3", "1+2+3", "2*3/1"]
    assert countdown_solutions([1, 2], 7) == []
    assert countdown_solutions([2, 3, 4], 5, max_numbers=2) == ["2+3"]
    for text in ("3*4+5", "5+(4*3)", "(5+4*3)", "5+3*4"):
        assert countdown_normal_form(text) == "3*4+5"
    assert countdown_normal_form("8-(2-1)") == countdown_normal_form("8+1-2")
    assert countdown_normal_form("2*(3+4)") != countdown_normal_form("2*3+2*4")


def test_generated_countdown_problems_have_their_reference_among_solutions():
    for difficulty in (2, 5):
        for p in countdown_task(n=10, seed=2, difficulty=difficulty).problems:
            numbers, target = p.metadata["numbers"], p.metadata["target"]
            solutions = countdown_solutions(numbers, target)
            assert countdown_normal_form(p.metadata["expression"]) in solutions


# ------------------------------------------------------------------------------ programs


def _run_independently(program: str) -> int:
    printed: list[int] = []
    scope: dict[str, int] = {}
    exec(program.replace(";", "\n"), {"__builtins__": {}, "print": printed.append}, scope)
    assert len(printed) == 1
    return printed[0]


def test_program_traces_recheck_independently_and_fit():
    for difficulty in range(1, PROGRAM_MAX_DIFFICULTY + 1):
        for p in programs_task(n=200, seed=5, difficulty=difficulty).problems:
            program, trace = p.prompt, p.metadata["solution"]
            value = _run_independently(program)
            assert p.reference == str(value)
            assert trace.splitlines()[-1] == f"#### {value}"
            assert len(program.split(";")) == difficulty + 2  # statements + print
            # replay the trace: every line's arithmetic is right and uses current values
            env: dict[str, int] = {}
            statements = program.split(";")[:-1]
            lines = trace.splitlines()[:-1]
            assert len(lines) == len(statements)
            for statement, line in zip(statements, lines):
                target, rhs = statement.split("=")
                assert line.startswith(statement)
                shown = line.split("=")
                result = int(shown[-1])
                assert result == eval(rhs, {"__builtins__": {}}, dict(env))
                if len(shown) == 4:  # x=a+b=3+4=7: the substituted values are the current ones
                    substituted = re.sub(r"[a-e]", lambda m: str(env[m.group(0)]), rhs)
                    assert shown[2] == substituted
                env[target] = result
                assert 0 <= result <= 999
            text = _rendered(p.prompt) + trace
            assert set(text) <= ALPHABET
            assert len(text) < 256
            assert _exact_correct(p.reference, trace)


def _exact_correct(reference: str, completion: str) -> bool:
    from rlbound.verify.exact import ExactVerifier

    verifier = ExactVerifier()
    answer = verifier.extract(completion)
    return answer is not None and verifier.equivalent(reference, answer)


def test_program_trace_format():
    assert program_trace("a=3;b=a*2;a=b+1;print(a)") == "a=3\nb=a*2=3*2=6\na=b+1=6+1=7\n#### 7"
    assert program_trace("a=3;b=a;b=b-a;print(b)") == "a=3\nb=a=3\nb=b-a=3-3=0\n#### 0"
    with pytest.raises(ValueError):
        program_trace("a=3;b=c+1;print(b)")
    with pytest.raises(ValueError):
        program_trace("a=3;b=a+1")
    assert not _exact_correct("7", "a=3\n#### 8")
