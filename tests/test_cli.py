"""The command line: bad inputs give one line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys


def rlbound(*args, cwd=None, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "rlbound.cli", *map(str, args)],
        capture_output=True, text=True, cwd=cwd, timeout=timeout,
    )


def assert_one_line_error(result, *fragments):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("rlbound: ")
    for fragment in fragments:
        assert fragment in lines[0]


def test_help_points_newcomers_to_the_lab():
    result = rlbound("--help")
    assert result.returncode == 0
    assert "rlbound lab run" in result.stdout and "sample" in result.stdout


def test_missing_tasks_file(tmp_path):
    result = rlbound("sample", "--task", tmp_path / "nope.jsonl", "--model", "x", "--out", tmp_path / "r")
    assert_one_line_error(result, "nope.jsonl", "not found")


def test_malformed_and_incomplete_tasks_files(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "1+1", "answer": "2"}\n{"problem": oops}\n')
    assert_one_line_error(
        rlbound("sample", "--task", bad, "--model", "x", "--out", tmp_path / "r"),
        "bad.jsonl", "line 2", "invalid JSON",
    )
    missing = tmp_path / "missing.jsonl"
    missing.write_text('{"problem": "1+1", "answer": "2"}\n' * 16 + '{"problem": "2+2"}\n')
    assert_one_line_error(
        rlbound("sample", "--task", missing, "--model", "x", "--out", tmp_path / "r"),
        "missing.jsonl", "line 17", 'missing field "answer"',
    )
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert_one_line_error(
        rlbound("sample", "--task", empty, "--model", "x", "--out", tmp_path / "r"), "no problems"
    )


def test_unknown_engine_and_bad_sampling_values(tmp_path):
    assert_one_line_error(
        rlbound("sample", "--task", "arithmetic", "--engine", "warp", "--model", "x", "--out", tmp_path / "r"),
        "unknown engine 'warp'", "tiny",
    )
    assert_one_line_error(
        rlbound("sample", "--task", "arithmetic", "--top-p", "0", "--model", "x", "--out", tmp_path / "r"),
        "top_p",
    )
    assert_one_line_error(
        rlbound("sample", "--task", "arithmetic", "-O", "difficulty=99", "--model", "x", "--out", tmp_path / "r"),
        "difficulty",
    )


def test_missing_run_and_k_larger_than_n(tmp_path):
    assert_one_line_error(rlbound("passk", tmp_path / "norun"), "norun", "not found")
    from tests.test_store import _run

    _run(tmp_path, n=4)
    result = rlbound("passk", tmp_path / "run", "--k", "8")
    assert_one_line_error(result, "k=8", "n=4")
    ok = rlbound("passk", tmp_path / "run", "--json")
    assert ok.returncode == 0, ok.stderr
    rows = json.loads(ok.stdout)
    assert [r["k"] for r in rows] == [1, 2, 4]


def test_debug_shows_the_traceback(tmp_path):
    result = rlbound("--debug", "passk", tmp_path / "norun")
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_export_hf_refuses_missing_or_damaged_models_and_a_full_out(tmp_path):
    from tests.test_end_to_end import _random_tiny_model

    assert_one_line_error(rlbound("export-hf", tmp_path / "nope", tmp_path / "hf"), "'", "nope", "does not exist")
    model = _random_tiny_model(tmp_path / "model", seed=0)
    assert_one_line_error(rlbound("export-hf", model, model, "--force"), "is the tiny model directory itself")
    full = tmp_path / "full"
    full.mkdir()
    (full / "notes.txt").write_text("mine")
    assert_one_line_error(rlbound("export-hf", model, full), f"'{full}' exists and is not empty", "--force")
    assert sorted(p.name for p in full.iterdir()) == ["notes.txt"]
    (model / "model.safetensors").write_bytes(b"not weights")
    assert_one_line_error(rlbound("export-hf", model, tmp_path / "hf"), "model.safetensors", "cannot be read")
    assert not (tmp_path / "hf").exists()
