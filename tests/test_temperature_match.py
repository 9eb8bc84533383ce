"""Temperature-matched entropy: the interpolation on known curves, tempered entropies, the runner."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rlbound.analysis.entropy import match_temperature
from rlbound.engines.base import SamplingParams
from rlbound.engines.tiny.checkpoint import save_model
from rlbound.engines.tiny.engine import TinyEngine
from rlbound.engines.tiny.model import TinyConfig, TinyLlama
from rlbound.engines.tiny.tokenizer import CharTokenizer
from rlbound.errors import RlboundError
from rlbound.sampler import sample_run
from rlbound.tasks.base import load_task
from rlbound.temperature_match import RESULT_FILE, run_temperature_match, tempered_entropy_means
from rlbound.verify.base import load_verifier

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_linear_curve_is_inverted_exactly():
    m = match_temperature([0.6, 0.8, 1.0, 1.2], [0.3, 0.4, 0.5, 0.6], 0.45)
    assert m.bracketed and m.monotone and m.temperature == pytest.approx(0.9)
    # order of the points does not matter; a target on a point gives that point
    m = match_temperature([1.2, 0.6, 1.0, 0.8], [0.6, 0.3, 0.5, 0.4], 0.5)
    assert m.temperature == pytest.approx(1.0)
    assert match_temperature([0.5, 1.0], [1.0, 2.0], 1.0).temperature == pytest.approx(0.5)


def test_entropy_of_a_tempered_distribution_is_matched():
    # H(softmax(z / T)) for a fixed z, sampled at 9 temperatures; the curve is convex-ish, so the
    # piecewise-linear answer is close to (not exactly) the true temperature
    z = np.array([3.0, 1.0, 0.5, 0.0, -1.0])

    def h(t):
        p = np.exp(z / t - np.max(z / t))
        p /= p.sum()
        return float(-(p * np.log(p)).sum())

    temps = np.linspace(0.4, 2.0, 9)
    m = match_temperature(temps, [h(t) for t in temps], h(1.1))
    assert m.bracketed and m.temperature == pytest.approx(1.1, abs=0.02)


def test_noisy_curve_uses_the_isotonic_fit_and_says_so():
    m = match_temperature([0.6, 0.8, 1.0, 1.2], [0.1, 0.4, 0.3, 0.6], 0.35)
    assert not m.monotone and "non-decreasing fit" in m.note
    assert m.fitted.tolist() == pytest.approx([0.1, 0.35, 0.35, 0.6])
    assert m.temperature == pytest.approx(0.8)  # the lowest temperature reaching the target


def test_target_outside_the_range_is_not_bracketed():
    low = match_temperature([0.6, 1.0, 1.4], [0.3, 0.5, 0.7], 0.1)
    assert not low.bracketed and low.temperature is None and low.side == "below" and "lower" in low.note
    high = match_temperature([0.6, 1.0, 1.4], [0.3, 0.5, 0.7], 0.9)
    assert not high.bracketed and high.side == "above" and "higher" in high.note
    assert high.to_dict()["temperature"] is None and json.dumps(high.to_dict())


def test_bad_inputs():
    with pytest.raises(RlboundError, match="at least two"):
        match_temperature([1.0], [0.5], 0.5)
    with pytest.raises(RlboundError, match="twice"):
        match_temperature([1.0, 1.0], [0.5, 0.6], 0.5)
    with pytest.raises(RlboundError, match="finite"):
        match_temperature([0.5, 1.0], [0.5, float("nan")], 0.5)
    with pytest.raises(RlboundError, match="> 0"):
        match_temperature([0.0, 1.0], [0.5, 0.6], 0.5)


def _model(path: Path, seed: int, scale: float = 1.0) -> Path:
    torch.manual_seed(seed)
    model = TinyLlama(TinyConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64))
    with torch.no_grad():
        model.output_weight().mul_(scale)  # larger logits: a peakier model
    return save_model(model, CharTokenizer(), path)


def test_tempered_entropy_is_the_entropy_of_softmax_logits_over_t(tmp_path):
    engine = TinyEngine(str(_model(tmp_path / "m", 0, scale=20.0)))
    tok = engine.tokenizer
    prompt, completion = "Q: 1+2\nA: ", "3 4"
    p_ids, c_ids = tok.encode(prompt, bos=True), tok.encode(completion)
    with torch.no_grad():
        logits = engine.model(torch.tensor([p_ids + c_ids])).double()[0, len(p_ids) - 1 : -1]
    values = []
    for t in (0.5, 1.0, 2.0):
        logp = torch.log_softmax(logits / t, -1)
        expected = float(-(logp.exp() * logp).sum(-1).mean())
        (got,) = tempered_entropy_means(engine, [prompt], [completion], t)
        assert got == pytest.approx(expected, rel=1e-5)
        values.append(got)
    assert values[0] < values[1] < values[2]
    # the hook is gone afterwards: plain scoring gives the untempered entropies again
    (plain,) = engine.score([prompt], [completion])
    logp = torch.log_softmax(logits, -1)
    assert np.mean(plain.token_entropies) == pytest.approx(float(-(logp.exp() * logp).sum(-1).mean()), rel=1e-5)
    assert math.isnan(tempered_entropy_means(engine, [prompt], [""], 1.0)[0])


def test_runner_matches_a_model_to_itself_at_its_own_temperature(tmp_path):
    model = _model(tmp_path / "a", 0, scale=20.0)
    task = load_task("arithmetic", n=3, difficulty=2)
    engine = TinyEngine(str(model), batch_size=64)
    ref = tmp_path / "ref"
    sample_run(ref, task, engine, load_verifier(task.verifier), SamplingParams(max_tokens=10), 4)
    out = tmp_path / "match"
    result = run_temperature_match(engine, ref, [0.5, 1.0, 2.0], out, problems=3, n=4,
                                   reference_engine=engine, n_boot=50)
    # at T = 1 model B (= A) draws A's own samples (same seeds) and measures them as A's are measured
    point_1 = next(e for t, e, _ in result.points if t == 1.0)
    assert point_1.mean == pytest.approx(result.target.mean, rel=1e-6)
    assert result.match.bracketed and result.match.temperature == pytest.approx(1.0, abs=1e-3)
    saved = json.loads((out / RESULT_FILE).read_text())
    assert saved["match"]["temperature"] == pytest.approx(1.0, abs=1e-3)
    assert [p["temperature"] for p in saved["points"]] == [0.5, 1.0, 2.0]
    assert (out / "T0.5" / "run.json").is_file() and len(saved["problem_ids"]) == 3


def test_cli_match_temperature(tmp_path):
    model = _model(tmp_path / "a", 0, scale=20.0)
    task = load_task("arithmetic", n=4, difficulty=2)
    ref = tmp_path / "ref"
    sample_run(ref, task, TinyEngine(str(model)), load_verifier(task.verifier), SamplingParams(max_tokens=8), 3)
    result = subprocess.run(
        [sys.executable, "-m", "rlbound.cli", "--quiet", "match-temperature", "--model", str(model), "--engine",
         "tiny", "--reference", str(ref), "--temperatures", "0.5,1,2", "--problems", "2", "--n", "2",
         "--out", str(tmp_path / "m")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "T=0.5: token entropy" in result.stdout and "target (ref)" in result.stdout
    saved = json.loads((tmp_path / "m" / RESULT_FILE).read_text())
    assert len(saved["problem_ids"]) == 2 and saved["n"] == 2
    bad = subprocess.run([sys.executable, "-m", "rlbound.cli", "match-temperature", "--model", str(model),
                          "--engine", "tiny", "--reference", str(tmp_path / "norun"), "--out", str(tmp_path / "x")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and bad.stderr.startswith("rlbound: ") and "not found" in bad.stderr
