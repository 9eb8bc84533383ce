"""The code verifier through the real sandbox: canonical solutions pass, wrong ones fail, forged
verdicts fail, hostile programs are contained beside a batch that still grades right, and
stdin/stdout tasks compare every line."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from rlbound.errors import RlboundError
from rlbound.verify.code import CodeVerifier, parse_spec
from rlbound.verify.code_compare import outputs_match, stdout_matches
from rlbound.verify.code_harness import decode_value, encode_value
from rlbound.verify.pool import VerifierPool, verify_batch

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "code"
HE_PLUS = DATA / "HumanEvalPlus.jsonl.gz"
MBPP_PLUS = DATA / "MbppPlus-dev-767efcc.jsonl.gz"

needs_sandbox = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
needs_data = pytest.mark.skipif(not HE_PLUS.is_file(), reason=f"benchmark data not found at {DATA}")
pytestmark = [needs_sandbox]


@pytest.fixture(scope="session")
def code_cache(tmp_path_factory):
    """One expected-output cache for the session (computed here, not read from the user's)."""
    import os

    path = tmp_path_factory.mktemp("rlbound-cache")
    before = os.environ.get("RLBOUND_CACHE")
    os.environ["RLBOUND_CACHE"] = str(path)
    yield path
    if before is None:
        os.environ.pop("RLBOUND_CACHE", None)
    else:
        os.environ["RLBOUND_CACHE"] = before


def _rows(path: Path) -> dict[str, dict]:
    with gzip.open(path, "rt") as fh:
        return {r["task_id"]: r for r in map(json.loads, fh)}


def _load(name: str, path: Path):
    from rlbound.progress import set_quiet
    from rlbound.tasks.base import load_task

    if not path.is_file():
        pytest.skip(f"benchmark data not found at {DATA}")
    set_quiet(True)
    return load_task(name, path=str(path))


@pytest.fixture(scope="session")
def humaneval_plus(code_cache):
    return _load("humaneval_plus", HE_PLUS)


@pytest.fixture(scope="session")
def mbpp_plus(code_cache):
    return _load("mbpp_plus", MBPP_PLUS)


@pytest.fixture(scope="module")
def pool():
    with VerifierPool(workers=4) as p:
        yield p


# --- the codec and the comparison rules (no sandbox needed, but cheap) ---------------------------


def test_codec_round_trips_plain_data_and_refuses_the_rest():
    value = [None, True, 3, 2**20000, 1.5, float("inf"), "x", (1, 2), {3}, frozenset({4}),
             {(1, 2): [1]}, 2 + 3j, b"\x00"]
    back = decode_value(json.loads(json.dumps(encode_value(value))))
    assert back == value and type(back[5]) is float and type(back[7]) is tuple
    assert decode_value(encode_value(float("nan"))) != decode_value(encode_value(float("nan")))

    class Sneaky(int):
        def __eq__(self, other):
            return True

    for bad in (Sneaky(1), object(), [Sneaky(2)], {"k": type}):
        with pytest.raises(ValueError):
            encode_value(bad)
    class Lying(dict):  # a dict subclass is read as the dict it holds, never through its methods
        def items(self):
            return [("forged", 1)]

        def __iter__(self):
            return iter(["forged"])

        def __eq__(self, other):
            return True

    assert decode_value(encode_value(Lying({1: 2}))) == {1: 2}
    from collections import Counter

    assert decode_value(encode_value(Counter("aab"))) == {"a": 2, "b": 1}
    nested = []
    for _ in range(200):
        nested = [nested]
    with pytest.raises(ValueError):
        encode_value(nested)


def test_the_harness_json_writer_agrees_with_json():
    import random

    from rlbound.verify.code_harness import to_json

    rng = random.Random(0)

    def value(depth=0):
        r = rng.random()
        if depth > 3 or r < 0.4:
            return rng.choice([rng.randint(-10**30, 10**30), rng.random() * 10 ** rng.randint(-300, 300),
                               "".join(chr(rng.randint(0, 0x10FFFF)) for _ in range(rng.randint(0, 6))),
                               True, False, None, -0.0, 2**5000])
        if r < 0.7:
            return [value(depth + 1) for _ in range(rng.randint(0, 4))]
        return {str(rng.randint(0, 99)): value(depth + 1) for _ in range(rng.randint(0, 3))}

    for _ in range(2000):
        encoded = encode_value(value())
        assert json.loads(to_json(encoded)) == encoded
    tricky = '"\\\n\x00\x7f\ud800'
    assert json.loads(to_json(tricky)) == tricky and "\n" not in to_json(tricky)


def test_evalplus_comparison_rules():
    spec = parse_spec(json.dumps({"kind": "function", "inputs": [[]], "expected": [1.0], "atol": 0}))
    assert outputs_match(1.0 + 1e-9, 1.0, spec, [])  # floats: atol 1e-6
    assert not outputs_match(1.001, 1.0, spec, [])
    assert outputs_match(True, 1, spec, [])  # Python's ==, as evalplus
    assert not outputs_match([1, 2], (1, 2), spec, [])
    assert not outputs_match("1.0", 1.0, spec, [])  # a float tolerance never accepts another type
    zero = parse_spec(json.dumps({"kind": "function", "dataset": "humaneval", "entry_point": "find_zero",
                                  "inputs": [[]], "expected": [0.0], "atol": 1e-4}))
    assert outputs_match(2.0, 1.0, zero, [[-2.0, 1.0]])  # any root of the polynomial
    assert not outputs_match(1.0, 2.0, zero, [[-2.0, 1.0]])


def test_stdout_rule_needs_every_line():
    assert stdout_matches("3\n4  \n", "3\n4")
    assert stdout_matches("1.0 2\n", "1 2.00")  # exact decimals
    assert not stdout_matches("3\n", "3\n4")  # a missing last line is a failure (no zip)
    assert not stdout_matches("3\n4\n5", "3\n4")
    assert not stdout_matches("0.1000001", "0.1")


def test_a_reference_that_is_not_a_test_spec_is_one_line():
    with pytest.raises(RlboundError, match="code task"):
        parse_spec("42")


# --- real benchmarks ------------------------------------------------------------------------------


@needs_data
def test_every_humaneval_plus_canonical_solution_passes(humaneval_plus, pool):
    rows = _rows(HE_PLUS)
    problems = humaneval_plus.problems
    assert len(problems) == 164 and not any(p.metadata["dropped_inputs"] for p in problems)
    # HumanEval/32 (find_zero) passes too: its outputs are judged by evalplus's oracle, not by ==.
    verdicts = verify_batch(CodeVerifier(), [p.reference for p in problems],
                            [rows[p.id]["canonical_solution"] for p in problems], pool=pool)
    failing = [(p.id, v.status) for p, v in zip(problems, verdicts) if not (v.correct and v.correct_base)]
    assert failing == []


@needs_data
def test_humaneval_prompts_are_the_original_ones(humaneval_plus):
    with gzip.open(DATA / "HumanEval.jsonl.gz", "rt") as fh:
        original = {r["task_id"]: r["prompt"] for r in map(json.loads, fh)}
    same = sum(original[p.id] == p.prompt for p in humaneval_plus.problems)
    assert same >= 163  # HumanEval+ fixed one prompt


@needs_data
def test_every_mbpp_plus_canonical_solution_passes(mbpp_plus, pool):
    rows = _rows(MBPP_PLUS)
    problems = mbpp_plus.problems
    assert len(problems) == 399 and all(p.metadata["dev_snapshot"] for p in problems)
    # Mbpp/255's five largest inputs make outputs past the codec's size cap: dropped, and counted.
    assert {p.id: p.metadata["dropped_inputs"] for p in problems if p.metadata["dropped_inputs"]} == {"Mbpp/255": 5}
    verdicts = verify_batch(CodeVerifier(), [p.reference for p in problems],
                            [rows[p.id]["canonical_solution"] for p in problems], pool=pool)
    assert [(p.id, v.status) for p, v in zip(problems, verdicts) if not v.correct] == []


@needs_data
def test_every_original_mbpp_reference_solution_passes(code_cache, pool):
    from rlbound.progress import set_quiet
    from rlbound.tasks.base import load_task

    set_quiet(True)
    task = load_task("mbpp", path=str(DATA / "mbpp.jsonl"))  # the test split, task ids 11-510
    # Mbpp/367 (a tree built in setup code) and Mbpp/486 (an argument computed at run time) are
    # left out: their tests are not `assert f(literals) == literal`.
    assert len(task) == 498 and not {"Mbpp/367", "Mbpp/486"} & {p.id for p in task.problems}
    assert "expert Python programmer" in task.problems[0].prompt
    with open(DATA / "mbpp.jsonl") as fh:
        code = {f"Mbpp/{r['task_id']}": r["code"] for r in map(json.loads, fh)}
    verdicts = verify_batch(CodeVerifier(), [p.reference for p in task.problems],
                            [code[p.id] for p in task.problems], pool=pool)
    assert [(p.id, v.status) for p, v in zip(task.problems, verdicts) if not v.correct] == []
    assert all(v.correct_base is None for v in verdicts)  # the original tests have no base subset


@needs_data
def test_wrong_solutions_fail_and_memorised_base_outputs_fail_plus(humaneval_plus, pool):
    rows = _rows(HE_PLUS)
    problems = humaneval_plus.problems[:20]
    wrong = ["    return None\n", "    raise ValueError('no')\n", "    return 0\n"]
    refs = [p.reference for p in problems for _ in wrong]
    progs = [w for _ in problems for w in wrong]
    verdicts = verify_batch(CodeVerifier(), refs, progs, pool=pool)
    assert not any(v.correct for v in verdicts)
    assert {v.status for v in verdicts[1::3]} == {"error"}  # raising is a crash, not a wrong answer
    # A program that memorised the base tests' outputs passes them and fails the plus inputs.
    memorised = []
    for p in problems:
        spec = parse_spec(p.reference)
        table = {repr(spec.input_values(i)): spec.expected_value(i) for i in range(spec.base)}
        entry = rows[p.id]["entry_point"]
        memorised.append(f"def {entry}(*args):\n    return {table!r}.get(repr(list(args)))\n")
    verdicts = verify_batch(CodeVerifier(), [p.reference for p in problems], memorised, pool=pool)
    assert all(v.correct_base for v in verdicts)
    assert sum(v.correct for v in verdicts) <= 1  # (a problem whose plus inputs repeat its base ones)


# --- forged verdicts ------------------------------------------------------------------------------

FORGERIES = {
    "always-equal object": (
        "def add(a, b):\n    class Yes:\n        def __eq__(self, other):\n            return True\n"
        "    return Yes()\n"),
    "int subclass equal to anything": (
        "def add(a, b):\n    class Yes(int):\n        def __eq__(self, other):\n            return True\n"
        "        __hash__ = int.__hash__\n    return Yes(0)\n"),
    # (a bare top-level call is dropped as example usage; an assignment runs)
    "os._exit(0) before the checks": "import os\n_ = os._exit(0)\ndef add(a, b):\n    return 0\n",
    "os._exit(0) inside the function": "import os\ndef add(a, b):\n    os._exit(0)\n",
    "sys.exit(0) at import": "import sys\n_ = sys.exit(0)\n",
    "expected outputs from the stack": (
        "import inspect\ndef add(a, b):\n    for f in inspect.stack():\n        for k, v in f.frame.f_locals.items():\n"
        "            if 'expect' in k:\n                return v\n    return None\n"),
    "expected outputs from the filesystem": (
        "import os\ndef add(a, b):\n    for root in ('/work', '/root', '/tmp', '/home', os.path.expanduser('~')):\n"
        "        for d, _, files in os.walk(root):\n            for f in files:\n"
        "                if f.endswith('.json'):\n                    return open(os.path.join(d, f)).read()\n"
        "    return None\n"),
    "a success message": "def add(a, b):\n    print('PASS: all tests passed')\n    print('{\"status\": \"pass\"}')\n    return None\n",
    "fake result frames": (
        "import gc, os\ndef add(a, b):\n    for o in gc.get_objects():\n"
        "        if type(o).__name__ == '_Frames':\n            for i in range(50):\n"
        "                o.send({'i': i, 'out': 0})\n            o.send({'done': 50})\n            os._exit(0)\n"
        "    return None\n"),
}


def _add_spec(n: int = 6, base: int | None = 3) -> str:
    inputs = [[i, 2 * i + 1] for i in range(n)]
    return json.dumps({"kind": "function", "entry_point": "add", "inputs": [encode_value(a) for a in inputs],
                       "expected": [a + b for a, b in inputs], "base": base, "times": [0.0] * n})


def test_forged_verdicts_fail(pool):
    reference = _add_spec()
    names = list(FORGERIES)
    verdicts = verify_batch(CodeVerifier(), [reference] * len(names), [FORGERIES[k] for k in names], pool=pool)
    outcome = {name: (v.correct, v.correct_base, v.status) for name, v in zip(names, verdicts)}
    assert not any(correct or base for correct, base, _ in outcome.values()), outcome
    assert outcome["os._exit(0) before the checks"][2] == "error"
    assert outcome["always-equal object"][2] == "ok"  # graded, and wrong: not plain data
    honest = verify_batch(CodeVerifier(), [reference], ["def add(a, b):\n    return a + b\n"], pool=pool)[0]
    assert (honest.correct, honest.correct_base, honest.status) == (True, True, "ok")


# --- hostile programs beside honest ones ----------------------------------------------------------

HOSTILE = {
    "infinite loop": ("def add(a, b):\n    while True:\n        pass\n", "timeout"),
    "alarm ignored, sleeping forever": (
        "import signal, time\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\n"
        "def add(a, b):\n    time.sleep(10**6)\n", "timeout"),
    "memory bomb": ("def add(a, b):\n    x = []\n    while True:\n        x.append(b'x' * 2**24)\n", "memory"),  # (or timeout, when starved of CPU by the fork bomb beside it)
    "fork bomb": ("import os\ndef add(a, b):\n    while True:\n        try:\n            os.fork()\n"
                  "        except OSError:\n            pass\n", None),
    "prints a gigabyte": ("import sys\ndef add(a, b):\n    for _ in range(2**14):\n        sys.stdout.write('x' * 2**16)\n"
                          "    return a + b\n", None),
    "floods the result channel": (
        "import gc, os\ndef add(a, b):\n    for o in gc.get_objects():\n        if type(o).__name__ == '_Frames':\n"
        "            while True:\n                os.write(o.fd, b'x' * 65536)\n", "output_limit"),
    "kills everything it can": ("import os, signal\ndef add(a, b):\n    os.kill(-1, signal.SIGKILL)\n"
                                "    return a + b\n", None),
    "closes its stdout": ("import os\nos.close(1)\nos.close(2)\ndef add(a, b):\n    return a + b\n", None),
    "syntax error": ("```python\ndef add(a, b)\n    return a + b\n```\n", "error"),
}


def test_hostile_programs_are_contained_and_the_batch_beside_them_grades_right(pool):
    reference = _add_spec(n=4, base=None)
    # alone, with time enough that the memory limit comes first (page faults are slow on a busy
    # machine: 512 MiB once took over 1 s here), a memory bomb is named as such
    alone = verify_batch(CodeVerifier(min_input_s=10.0, max_wall_s=20.0), [reference], [HOSTILE["memory bomb"][0]],
                         pool=pool)[0]
    assert alone.status == "memory", alone
    honest = "def add(a, b):\n    return a + b\n"
    names = list(HOSTILE)
    programs = [HOSTILE[k][0] for k in names] + [honest] * 4
    # Distinct keys for the honest copies, so each runs beside the hostile ones (no cache hit).
    programs[-4:] = [honest + f"\nX = {i}\n" for i in range(4)]
    verdicts = verify_batch(CodeVerifier(wall_s=2.0), [reference] * len(programs), programs, pool=pool)
    for name, v in zip(names, verdicts):
        expected = HOSTILE[name][1]
        assert not v.correct or name in ("prints a gigabyte", "kills everything it can", "closes its stdout"), name
        if expected is not None:
            assert v.status == expected or (name == "memory bomb" and v.status == "timeout"), (name, v.status)
    assert all(v.correct for v in verdicts[-4:])
    # prints are discarded in function mode, and a harness that outlives kill(-1) still reports
    by_name = dict(zip(names, verdicts))
    assert by_name["prints a gigabyte"].correct and by_name["closes its stdout"].correct


# --- stdin/stdout tasks ---------------------------------------------------------------------------


def test_stdio_task_file_and_grading(tmp_path, code_cache):
    from rlbound.tasks.code import code_stdio

    rows = [{"id": "sum", "prompt": "Read two integers, print their sum.",
             "public_tests": [{"input": "1 2\n", "output": "3\n"}],
             "tests": [{"input": "5 7\n", "output": "12\n"}, {"input": "-1 1\n", "output": "0\n"}]},
            {"id": "lines", "prompt": "Print n, then n lines 0..n-1.",
             "tests": [{"input": "3\n", "output": "3\n0\n1\n2\n"}]}]
    file = tmp_path / "tasks.jsonl"
    file.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    task = code_stdio(path=str(file))
    ref = {p.id: p.reference for p in task.problems}
    cases = [
        ("sum", "a, b = map(int, input().split())\nprint(a + b)\n", (True, True)),
        ("sum", "import sys\na, b = map(int, sys.stdin.read().split())\nprint(f'{a+b}.0')\n", (True, True)),
        ("sum", "a, b = map(int, open(0).read().split())\nprint(a + b)\nexit(0)\n", (True, True)),
        ("sum", "a, b = map(int, input().split())\nprint(3)\n", (False, True)),  # passes the public test only
        ("lines", "n = int(input())\nprint(n)\nfor i in range(n - 1):\n    print(i)\n", (False, None)),
        ("lines", "n = int(input())\nprint(n)\nfor i in range(n):\n    print(i)\n", (True, None)),
        ("lines", "import sys\nsys.exit(3)\n", (False, None)),
    ]
    verdicts = verify_batch(CodeVerifier(), [ref[c[0]] for c in cases], [c[1] for c in cases])
    assert [(v.correct, v.correct_base) for v in verdicts] == [c[2] for c in cases]
    assert verdicts[-1].status == "error"


def test_stdio_task_file_errors_name_the_line(tmp_path):
    from rlbound.tasks.code import code_stdio

    file = tmp_path / "bad.jsonl"
    file.write_text(json.dumps({"id": "a", "prompt": "p", "tests": [{"input": "1"}]}) + "\n")
    with pytest.raises(RlboundError, match=r"line 1: test 0 needs the fields"):
        code_stdio(path=str(file))


def test_unsafe_no_sandbox_runs_the_same_harness():
    reference = _add_spec(n=3, base=None)
    v = verify_batch(CodeVerifier(sandbox=False), [reference, reference],
                     ["def add(a, b):\n    return a + b\n", "def add(a, b):\n    return a - b\n"])
    assert [x.correct for x in v] == [True, False]
    assert CodeVerifier(sandbox=False).settings()["sandbox"] is False


@needs_data
def test_answers_are_normalised_programs_and_normalising_is_idempotent():
    from rlbound.verify.code_extract import normalise_program

    v = CodeVerifier()
    for row in list(_rows(HE_PLUS).values())[:40]:
        answer = v.extract(row["canonical_solution"] + "\n# a comment\n")
        assert answer == v.extract(row["canonical_solution"])
        assert normalise_program(answer) == answer


def test_example_usage_is_blanked_on_the_host_and_shared_lines_stay():
    from rlbound.verify.code import without_examples

    program = ('"""doc"""\nimport os\ndef f(x):\n    return x\nprint(f(input()))\nassert f(1) == 2\n'
               'if __name__ == "__main__":\n    f(input())\nX = 1; print(X)\n')
    out = without_examples(program)
    assert out.splitlines() == ['"""doc"""', "import os", "def f(x):", "    return x", "", "", "", "",
                                "X = 1; print(X)"]
    assert without_examples("def f(:\n") == "def f(:\n"
