"""`rlbound verify-check FILE.jsonl`: a verifier's agreement with a trusted grader's labels."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.test_cli import assert_one_line_error

CASES = [
    {"id": "right", "source": "a", "gold": "2", "completion": "so \\boxed{2}", "expect": True},
    {"id": "wrong", "source": "a", "gold": "3", "completion": "so \\boxed{4}", "expect": False},
    # Once accepted (rules 1 read "32, 349" as 32349); the grader says no, and so must we.
    {"id": "box-list", "source": "a", "gold": "32349", "completion": "\\boxed{32, 349}", "expect": False},
    {"id": "mislabelled", "source": "b", "gold": "5", "completion": "The answer is 5.", "expect": False},
    {"id": "in-words", "source": "b", "gold": "7", "completion": "it is seven, I think", "expect": True},
    {"id": "unclear", "source": "b", "gold": "1", "completion": "1?", "expect": None},
]


def verify_check(*args):
    env = {**os.environ, "COLUMNS": "200"}  # rich tables unwrapped
    return subprocess.run([sys.executable, "-m", "rlbound.cli", "--quiet", "verify-check", *map(str, args)],
                          capture_output=True, text=True, timeout=180, env=env)


def _row(stdout: str, first: str) -> list[str]:
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip("│┃ ").split("│")]
        if cells and cells[0] == first:
            return cells
    raise AssertionError(f"no row {first!r} in:\n{stdout}")


def _write(path, cases):
    path.write_text("".join(json.dumps(c) + "\n" for c in cases))
    return path


def test_table_per_source_and_disagreements(tmp_path):
    graded = _write(tmp_path / "graded.jsonl", CASES)
    result = verify_check(graded)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    # source, cases, agree, agreement, false acceptances, false rejections
    assert _row(out, "a") == ["a", "3", "3", "100.0 %", "0", "0"]
    assert _row(out, "b") == ["b", "2", "0", "0.0 %", "1", "1"]
    assert _row(out, "all") == ["all", "5", "3", "60.0 %", "1", "1"]
    assert "disagreements (2 of 2)" in out
    # id, gold, extracted answer, status, expect; the false acceptance first.
    assert _row(out, "mislabelled") == ["mislabelled", "5", "5", "ok", "false"]
    assert _row(out, "in-words") == ["in-words", "7", "–", "no_answer", "true"]
    assert out.index("mislabelled") < out.index("in-words")
    assert "unclear" not in out, "a null label is skipped"

    shown = verify_check(graded, "--verifier", "exact", "--show", "1", "--timeout", "3")
    assert shown.returncode == 0, shown.stderr
    assert "exact verifier" in shown.stdout and "disagreements (1 of 2)" in shown.stdout
    assert "mislabelled" in shown.stdout and "in-words" not in shown.stdout


def test_one_source_has_no_total_row(tmp_path):
    graded = _write(tmp_path / "mine.jsonl", [{k: v for k, v in c.items() if k != "source"} for c in CASES[:2]])
    result = verify_check(graded, "--verifier", "exact", "--show", "0")
    assert result.returncode == 0, result.stderr
    assert _row(result.stdout, "mine") == ["mine", "2", "2", "100.0 %", "0", "0"]
    assert "all" not in [line.strip("│ ").split("│")[0].strip() for line in result.stdout.splitlines()]
    assert "disagreements" not in result.stdout


def test_malformed_files_give_one_line_errors(tmp_path):
    bad = tmp_path / "x.jsonl"
    bad.write_text(json.dumps(CASES[0]) + "\n" + json.dumps({"gold": "1", "completion": "1"}) + "\n")
    result = verify_check(bad)
    assert result.returncode == 2
    assert_one_line_error(result, 'file x.jsonl line 2: missing field "expect"')
    assert_one_line_error(verify_check(tmp_path / "none.jsonl"), "none.jsonl", "not found")
    assert_one_line_error(verify_check(_write(tmp_path / "y.jsonl", CASES), "--verifier", "oracle"),
                          "unknown verifier 'oracle'")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert_one_line_error(verify_check(empty), "no labelled cases")
