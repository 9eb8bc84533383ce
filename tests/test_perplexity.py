"""Perplexity: the formula, its summary, `rlbound score` end to end, and the report's section."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from rlbound.analysis.perplexity import SampleScores, perplexity, perplexity_summary
from rlbound.engines.base import SamplingParams
from rlbound.engines.tiny.checkpoint import save_model
from rlbound.engines.tiny.engine import TinyEngine
from rlbound.engines.tiny.model import TinyConfig, TinyLlama
from rlbound.engines.tiny.tokenizer import CharTokenizer
from rlbound.errors import RlboundError
from rlbound.sampler import sample_run
from rlbound.scoring import score_run
from rlbound.store import load_run, read_samples
from rlbound.tasks.base import load_task
from rlbound.tasks.templates import get_template
from rlbound.verify.base import load_verifier

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model(path: Path, seed: int, uniform: bool = False) -> Path:
    torch.manual_seed(seed)
    model = TinyLlama(TinyConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64))
    if uniform:  # every logit 0: each next token has probability 1/vocab_size
        with torch.no_grad():
            model.output_weight().zero_()
    return save_model(model, CharTokenizer(), path)


def _run(tmp_path: Path, model: Path, n: int = 3, problems: int = 3) -> Path:
    task = load_task("arithmetic", n=problems, difficulty=2)
    out = tmp_path / "run"
    sample_run(out, task, TinyEngine(str(model), batch_size=64), load_verifier(task.verifier),
               SamplingParams(max_tokens=12), n)
    return out


def rlbound(*args):
    return subprocess.run([sys.executable, "-m", "rlbound.cli", "--quiet", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_formula():
    assert perplexity([-1.0, -2.0, -3.0]) == pytest.approx(math.exp(2.0), rel=1e-15)
    assert perplexity([0.0]) == 1.0
    assert math.isnan(perplexity([]))
    assert perplexity([-1000.0]) == math.inf


def test_summary_averages_per_problem_then_over_problems():
    # problem a: log PPL 1 and 3 (mean 2); problem b: log PPL 4 and one empty sample
    scores = SampleScores("rl", "base", ["a", "b"], [np.array([-1.0, -3.0]), np.array([-4.0, np.nan])],
                          [np.array([5, 5]), np.array([2, 0])])
    s = perplexity_summary(scores, n_boot=200)
    assert s.mean_log_ppl == pytest.approx(3.0)
    assert s.geo_mean_ppl == pytest.approx(math.exp(3.0))
    assert s.n_samples == 4 and s.n_samples_missing == 1 and s.n_problems == 2
    assert s.median_ppl == pytest.approx(math.exp(3.0))
    assert s.mean_ppl == pytest.approx((math.e + math.exp(3) + math.exp(4)) / 3)
    assert 2.0 <= s.lo <= s.hi <= 4.0
    d = s.to_dict()
    assert d["mean_log_ppl"]["mean"] == pytest.approx(3.0) and set(d["ppl_quantiles"]) == {"0.05", "0.25", "0.5", "0.75", "0.95"}
    with pytest.raises(RlboundError, match="no sample"):
        perplexity_summary(SampleScores("rl", "x", ["a"], [np.array([np.nan])], [np.array([0])]))


def test_uniform_model_has_perplexity_vocab_size(tmp_path):
    run = _run(tmp_path, _model(tmp_path / "a", 0))
    uniform = TinyEngine(str(_model(tmp_path / "u", 1, uniform=True)))
    stats = score_run(run, uniform, label="uniform")
    table = pq.read_table(run / "scores" / "uniform.parquet").to_pylist()
    assert stats.scored == len(table) == 9
    texts = {(r["problem_id"], r["sample_idx"]): r["completion"] for r in read_samples(run).to_pylist()}
    for row in table:
        assert row["n_tokens"] == len(texts[(row["problem_id"], row["sample_idx"])])
        if row["n_tokens"]:
            assert row["ppl"] == pytest.approx(99.0, rel=1e-5)
            assert row["mean_logprob"] == pytest.approx(-math.log(99.0), rel=1e-6)


def test_scores_match_a_hand_computation_and_resume(tmp_path):
    model_a = _model(tmp_path / "a", 0)
    run = _run(tmp_path, model_a)
    scorer = TinyEngine(str(_model(tmp_path / "b", 7)))

    class Interrupted(Exception):
        pass

    calls = []
    real_score = scorer.score

    def flaky(prompts, completions):
        calls.append(len(prompts))
        if len(calls) == 2:
            raise Interrupted
        return real_score(prompts, completions)

    scorer.score = flaky
    with pytest.raises(Interrupted):
        score_run(run, scorer, label="b", chunk_samples=4)
    assert not (run / "scores" / "b.parquet").exists()
    assert len(list((run / "scores" / ".b.partial").glob("part-*.parquet"))) == 1
    stats = score_run(run, scorer, label="b", chunk_samples=4)
    assert (stats.scored, stats.already_present) == (5, 4)
    assert not (run / "scores" / ".b.partial").exists()
    again = score_run(run, scorer, label="b")
    assert (again.scored, again.already_present) == (0, 9)

    # by hand: the scorer's log-softmax over <bos> + prompt + completion, completion positions only
    problems = {p.id: p for p in load_task("arithmetic", n=3, difficulty=2).problems}
    tok, model = scorer.tokenizer, scorer.model
    rows = {(r["problem_id"], r["sample_idx"]): r for r in pq.read_table(stats.path).to_pylist()}
    for sample in read_samples(run).to_pylist()[:4]:
        prompt = get_template("plain").render(problems[sample["problem_id"]].prompt)
        p_ids, c_ids = tok.encode(prompt, bos=True), tok.encode(sample["completion"])
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([p_ids + c_ids])).double(), -1)[0]
        lps = [float(logp[len(p_ids) - 1 + j, c]) for j, c in enumerate(c_ids)]
        row = rows[(sample["problem_id"], sample["sample_idx"])]
        if lps:
            assert row["mean_logprob"] == pytest.approx(np.mean(lps), abs=1e-5)
            assert row["ppl"] == pytest.approx(math.exp(-np.mean(lps)), rel=1e-4)
    info = json.loads((run / "scores" / "b.json").read_text())
    assert info["complete"] and info["samples"] == 9 and info["identity"]["engine"] == "tiny"
    assert info["template"] == "plain"
    # the store hands the scores to analyses, grouped per problem
    (scores,) = load_run(run).scores
    assert scores.scorer_label == "b" and len(scores) == 3 and sum(len(m) for m in scores.mean_logprobs) == 9


def test_cli_score_and_report(tmp_path):
    model_a, model_b = _model(tmp_path / "a", 0), _model(tmp_path / "b", 3)
    run = _run(tmp_path, model_a, n=2, problems=2)
    first = rlbound("score", "--scorer", model_b, "--engine", "tiny", run)
    assert first.returncode == 0, first.stderr
    assert "4 samples scored, 0 already present" in first.stdout
    assert (run / "scores" / "b.parquet").is_file() and (run / "scores" / "b.json").is_file()
    again = rlbound("score", "--scorer", model_b, "--engine", "tiny", run)
    assert "0 samples scored, 4 already present" in again.stdout
    clash = rlbound("score", "--scorer", model_a, "--engine", "tiny", run, "--label", "b")
    assert clash.returncode != 0 and "Traceback" not in clash.stderr
    assert clash.stderr.strip().count("\n") == 0 and "another scorer" in clash.stderr and "--label" in clash.stderr
    other = rlbound("score", "--scorer", model_a, "--engine", "tiny", run, "--label", "self")
    assert other.returncode == 0, other.stderr

    rep = rlbound("report", run, "--out", tmp_path / "report")
    assert rep.returncode == 0, rep.stderr
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    pairs = {(p["run"], p["scorer"]) for p in results["perplexity"]}
    assert pairs == {("run", "b"), ("run", "self")}
    html = (tmp_path / "report" / "report.html").read_text()
    assert "<h2>Perplexity</h2>" in html and "geometric-mean PPL" in html


def test_cli_missing_run_is_one_line(tmp_path):
    result = rlbound("score", "--scorer", tmp_path / "model", "--engine", "tiny", tmp_path / "norun")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("rlbound: ") and "norun" in lines[0] and "not found" in lines[0]
