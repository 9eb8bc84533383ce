"""Tasks: the synthetic arithmetic family, the file task on real benchmark files, templates."""

from __future__ import annotations

import json

import pytest

from rlbound.errors import RlboundError
from rlbound.tasks.base import load_task
from rlbound.tasks.synthetic import arithmetic_problem
from rlbound.tasks.templates import get_template


def _evaluate_trace(solution: str) -> int:
    """Re-check every written step of a trace and return its final answer."""
    value = None
    for line in solution.splitlines():
        if line.startswith("#### "):
            return int(line[5:])
        lhs, rhs = line.split("=")
        op = next(c for c in "+-*" if c in lhs[1:])
        a, b = lhs.split(op, 1) if lhs[0] != "-" else (lhs, "")
        a, b = int(a), int(b)
        if value is not None:
            assert a == value, f"step {line!r} does not continue from {value}"
        value = {"+": a + b, "-": a - b, "*": a * b}[op]
        assert value == int(rhs), f"wrong step {line!r}"
    raise AssertionError("no answer line")


def test_arithmetic_is_deterministic_and_prefix_stable():
    a = load_task("arithmetic", n=20, seed=3, difficulty=4)
    b = load_task("arithmetic", n=40, seed=3, difficulty=4)
    assert a.problems == b.problems[:20]
    c = load_task("arithmetic", n=20, seed=4, difficulty=4)
    assert [p.prompt for p in a.problems] != [p.prompt for p in c.problems]
    assert len({p.id for p in b.problems}) == 40


@pytest.mark.parametrize("difficulty", [1, 2, 3, 5, 8])
def test_arithmetic_traces_are_correct(difficulty):
    for i in range(50):
        problem = arithmetic_problem(seed=0, difficulty=difficulty, index=i)
        solution = problem.metadata["solution"]
        assert len(solution.splitlines()) == difficulty + 1
        assert _evaluate_trace(solution) == int(problem.reference)
        # The expression evaluates (with Python's own parser) to the reference.
        assert eval(problem.prompt) == int(problem.reference)  # noqa: S307 - digits and +-*() only


def test_arithmetic_rejects_bad_difficulty():
    with pytest.raises(RlboundError, match="difficulty"):
        load_task("arithmetic", difficulty=0)


def test_file_task_math500(shared_data):
    task = load_task("file", path=str(shared_data / "math" / "math500_test.jsonl"))
    assert len(task) == 500
    first = task.problems[0]
    assert first.id == "test/precalculus/807.json"
    assert first.reference == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert first.prompt.startswith("Convert the point $(0,3)$")
    assert task.verifier == "math"


def test_file_task_gsm8k_embedded_answer(shared_data):
    task = load_task("file", path=str(shared_data / "math" / "gsm8k_test.jsonl"), limit=5)
    assert [p.reference for p in task.problems] == ["18", "3", "70000", "540", "20"]
    assert task.problems[0].id == "gsm8k_test-0"


def test_file_task_minerva_boxed_in_solution(shared_data):
    task = load_task("file", path=str(shared_data / "math" / "minerva_math_test.qwen25math.jsonl"), limit=3)
    assert task.problems[0].reference == "1.6"
    assert all(p.reference for p in task.problems)


def test_file_task_list_and_float_answers(shared_data):
    olympiad = load_task("file", path=str(shared_data / "math" / "olympiadbench_test.qwen25math.jsonl"), limit=2)
    assert olympiad.problems[0].reference == "2"
    amc = load_task("file", path=str(shared_data / "math" / "amc23_test.qwen25math.jsonl"), limit=1)
    assert amc.problems[0].reference == "27"


def test_file_task_json_and_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = [{"qid": f"q{i}", "q": f"What is {i}+1?", "a": str(i + 1)} for i in range(4)]
    (tmp_path / "p.json").write_text(json.dumps({"data": records}))
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "p.parquet")
    for name in ("p.json", "p.parquet"):
        task = load_task(
            "file", path=str(tmp_path / name), question_field="q", answer_field="a", id_field="qid"
        )
        assert [p.id for p in task.problems] == ["q0", "q1", "q2", "q3"]
        assert task.problems[2].reference == "3"


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"problem": "a", "answer": "1"}\n{"problem": "b"}\n', 'line 2: missing field "answer"'),
        ('{"problem": "a", "answer": "1"}\n{"problem": "b", \n', "line 2: invalid JSON"),
        ('{"answer": "1"}\n', 'line 1: missing field "problem or question'),
        ("", "holds no problems"),
        ('{"id": 1, "problem": "a", "answer": "1"}\n{"id": 1, "problem": "b", "answer": "2"}\n', "duplicate problem id"),
    ],
)
def test_file_task_errors_name_the_line(tmp_path, content, message):
    path = tmp_path / "x.jsonl"
    path.write_text(content)
    with pytest.raises(RlboundError, match=message) as info:
        load_task("file", path=str(path))
    assert "x.jsonl" in str(info.value) and "\n" not in str(info.value)


def test_file_task_missing_file():
    with pytest.raises(RlboundError, match="not found"):
        load_task("file", path="/nonexistent/problems.jsonl")


def test_templates_keep_braces_literal():
    text = get_template("qwen-boxed").render("What is $\\frac{1}{2}$?")
    assert "\\boxed{}" in text and "What is $\\frac{1}{2}$?" in text
    assert get_template("plain").render("1+2") == "Q: 1+2\nA: "
    assert get_template("r1").render("x").endswith("Assistant: <think>")
    with pytest.raises(RlboundError, match="unknown prompt template"):
        get_template("nope")
