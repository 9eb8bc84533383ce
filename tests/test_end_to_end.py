"""End to end through the real CLI: resume after SIGKILL, and two tiny-engine runs → report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rlbound.engines.tiny.checkpoint import save_model
from rlbound.engines.tiny.model import TinyConfig, TinyLlama
from rlbound.engines.tiny.tokenizer import CharTokenizer
from rlbound.store import load_run, read_samples

pytestmark = pytest.mark.slow


def _random_tiny_model(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    return save_model(TinyLlama(TinyConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64)), CharTokenizer(), path)


def _sample_cmd(model: Path, out: Path, n: int, problems: int, max_tokens: int = 24) -> list[str]:
    return [
        sys.executable, "-m", "rlbound.cli", "--quiet", "sample", "--task", "arithmetic",
        "-O", f"n={problems}", "-O", "difficulty=2", "--engine", "tiny", "--model", str(model),
        "--out", str(out), "-n", str(n), "--max-tokens", str(max_tokens), "--batch-size", "64",
    ]


def test_resume_after_sigkill_fills_exactly_the_missing_samples(tmp_path):
    model = _random_tiny_model(tmp_path / "model", seed=0)
    out = tmp_path / "run"
    cmd = _sample_cmd(model, out, n=96, problems=40, max_tokens=48)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    shards = out / "samples"
    deadline = time.time() + 120
    while time.time() < deadline and not (shards.is_dir() and len(list(shards.glob("part-*.parquet"))) >= 2):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = read_samples(out).num_rows
    assert 0 < partial < 40 * 96, "the kill should land mid-run"

    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"{partial} already present" in done.stdout
    rows = read_samples(out).to_pylist()
    keys = [(r["problem_id"], r["sample_idx"]) for r in rows]
    assert len(keys) == len(set(keys)) == 40 * 96
    assert {k[1] for k in keys} == set(range(96))

    # The resumed run equals a run made in one go (per-sample seeds make it reproducible).
    fresh = tmp_path / "fresh"
    subprocess.run(_sample_cmd(model, fresh, n=96, problems=40, max_tokens=48), check=True, capture_output=True)
    by_key = {(r["problem_id"], r["sample_idx"]): r["completion"] for r in rows}
    fresh_rows = read_samples(fresh).to_pylist()
    assert all(by_key[(r["problem_id"], r["sample_idx"])] == r["completion"] for r in fresh_rows)


def test_two_tiny_runs_make_a_report_with_curves(tmp_path):
    from rlbound.engines.tiny.train import fit_arithmetic_model

    trained = fit_arithmetic_model(tmp_path / "models" / "trained", difficulty=1, n_train=2000, steps=120, eval_n=0)
    untrained = _random_tiny_model(tmp_path / "models" / "untrained", seed=1)
    for name, model in (("untrained", untrained), ("trained", Path(trained.model_dir))):
        result = subprocess.run(
            [*_sample_cmd(model, tmp_path / name, n=16, problems=30), "--label", name],
            capture_output=True, text=True, timeout=300,
        )
        assert result.returncode == 0, result.stderr
    report = subprocess.run(
        [sys.executable, "-m", "rlbound.cli", "--quiet", "report", tmp_path / "untrained",
         tmp_path / "trained", "--out", tmp_path / "report"],
        capture_output=True, text=True, timeout=300,
    )
    assert report.returncode == 0, report.stderr
    html = (tmp_path / "report" / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 2
    assert "untrained" in html and "trained" in html
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    curves = {run["label"]: run for run in results["runs"]}
    assert set(curves) == {"untrained", "trained"}
    trained_run = load_run(tmp_path / "trained").samples
    # The report's pass@1 is the mean per-problem accuracy of the stored samples.
    expected = float((trained_run.c / trained_run.n).mean())
    pass1 = {label: run["pass_at_k"][0] for label, run in curves.items()}
    assert pass1["trained"]["k"] == 1
    assert pass1["trained"]["mean"] == pytest.approx(expected, abs=1e-12)
    assert [p["k"] for p in curves["trained"]["pass_at_k"]] == [1, 2, 4, 8, 16]
    # A model trained on the task beats random weights.
    assert pass1["trained"]["mean"] > pass1["untrained"]["mean"]
