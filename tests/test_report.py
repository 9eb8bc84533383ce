"""write_report: the HTML page, results.json, CSVs; passk_rows for the CLI."""

from __future__ import annotations

import base64
import csv
import json
import re

import numpy as np
import pytest

from rlbound.analysis.coverage import coverage
from rlbound.analysis.efficiency import sampling_efficiency_gap
from rlbound.analysis.entropy import answer_entropy_run
from rlbound.analysis.passk import ACCURACY_BINS, pass_at_k
from rlbound.analysis.support import empirical_support
from rlbound.analysis.samples import RunSamples
from rlbound.errors import RlboundError
from rlbound.report.html import passk_rows, write_report

N_PROBLEMS, N = 50, 64


pytestmark = pytest.mark.usefixtures("quiet")


def _run(label: str, p_correct: np.ndarray, seed: int, meta=None) -> RunSamples:
    rng = np.random.default_rng(seed)
    ids = [f"prob-{i}" for i in range(len(p_correct))]
    correct = [rng.random(N) < p for p in p_correct]
    answers = [[("42" if ok else str(rng.integers(3))) if rng.random() > 0.1 else None for ok in row]
               for row in correct]
    statuses = [["no_answer" if a is None else "ok" for a in row] for row in answers]
    statuses[0][0] = "timeout"  # one verifier timeout: 1 sample of N_PROBLEMS * N
    return RunSamples(label, ids, correct, answers, statuses=statuses, meta=meta or {})


@pytest.fixture
def runs():
    p_base = np.linspace(0.05, 0.6, N_PROBLEMS)
    # "RL": sharp on 70% of the problems, blind on the rest -> wins pass@1, loses pass@64
    p_rl = np.where(np.arange(N_PROBLEMS) % 10 < 7, 0.9, 0.0)
    base = _run("base-7B", p_base, 1, {"model": {"name": "org/base-7b"}, "engine": "vllm", "task": "math500"})
    rl = _run("rl <GRPO> & co", p_rl, 2, {"model": "org/rl-7b", "engine": {"name": "hf"}})
    return [base, rl]


def test_write_report_files(tmp_path, runs):
    page = write_report(runs, tmp_path / "out", extra_ks=(3,), n_boot=200)
    out = tmp_path / "out"
    assert page == out / "report.html"
    assert {p.name for p in out.iterdir()} == {"report.html", "results.json", "passk.csv", "per_problem.csv"}

    text = page.read_text(encoding="utf-8")
    # self-contained: embedded PNGs (valid ones), no scripts, no external URLs
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) >= 4
    for figure in ("empirical support categories", "answer and token entropy per run"):
        assert f'alt="{figure}" src="data:image/png;base64,' in text
    assert all(base64.b64decode(b).startswith(b"\x89PNG") for b in images)
    assert "<script" not in text.lower()
    assert "http://" not in text and "https://" not in text
    assert not re.search(r'(src|href)="(?!data:)', text)
    # labels escaped, metadata shown, sections present in order
    assert "rl &lt;GRPO&gt; &amp; co" in text and "rl <GRPO>" not in text
    assert "base-7B" in text and "org/base-7b" in text and "math500" in text and "vllm" in text
    order = [text.index(h) for h in ("Summary", "pass@k curves", "Crossover", "Coverage and empirical support",
                                     "Entropy and sampling efficiency", "Per-problem accuracy", "pass@k table")]
    assert order == sorted(order)
    assert "pass@64" in text and "maj@64" in text
    no_answer = sum(s == "no_answer" for row in runs[0].statuses for s in row)
    assert f"{no_answer / (N_PROBLEMS * N):.1%} / {1 / (N_PROBLEMS * N):.1%}" in text

    res = json.loads((out / "results.json").read_text())
    assert {"rlbound_version", "title", "settings", "runs", "crossovers"} <= set(res)
    assert [r["label"] for r in res["runs"]] == ["base-7B", "rl <GRPO> & co"]
    r0 = res["runs"][0]
    assert r0["model"] == "org/base-7b" and r0["engine"] == "vllm" and r0["task"] == "math500"
    assert res["runs"][1]["engine"] == "hf" and res["runs"][1]["task"] is None
    assert [p["k"] for p in r0["pass_at_k"]] == [1, 2, 3, 4, 8, 16, 32, 64]
    assert r0["n_problems"] == N_PROBLEMS and r0["n_min"] == r0["n_max"] == N
    assert sum(r0["verify_statuses"].values()) == N_PROBLEMS * N and r0["verify_statuses"]["timeout"] == 1
    assert len(r0["per_problem"]) == N_PROBLEMS
    n = np.array([p["n"] for p in r0["per_problem"]])
    c = np.array([p["c"] for p in r0["per_problem"]])
    np.testing.assert_array_equal(c, runs[0].c)
    for point in r0["pass_at_k"]:
        assert point["mean"] == pytest.approx(pass_at_k(n, c, point["k"]).mean(), abs=1e-12)
        assert point["lo"] <= point["mean"] <= point["hi"]
    assert r0["maj_at_k"]["k"] == 64
    assert r0["accuracy_histogram"]["bins"] == ACCURACY_BINS
    assert sum(r0["accuracy_histogram"]["counts"]) == N_PROBLEMS
    (cx,) = res["crossovers"]
    assert cx["reference"] == "base-7B" and cx["run"] == "rl <GRPO> & co"
    assert {"k", "lo", "hi", "frac_none", "k_max", "statement"} <= set(cx)
    assert cx["k_max"] == N
    # the synthetic RL run leads at pass@1, so A is the RL run and the question is when base catches up
    assert cx["a"] == "rl <GRPO> & co" and cx["b"] == "base-7B"
    assert cx["pass_at_1"]["a"] > cx["pass_at_1"]["b"] and cx["pass_at_k_max"]["b"] > cx["pass_at_k_max"]["a"]
    assert 1 < cx["k"] < N

    # coverage / empirical support / ΔSE at the largest common k, reference = base
    (sc,) = res["support_comparisons"]
    assert sc["reference"] == "base-7B" and sc["run"] == "rl <GRPO> & co" and sc["k"] == N
    sup = empirical_support(runs[0], runs[1], N, 0.05, n_boot=200)
    es = sc["empirical_support"]
    assert es["counts"] == {"P": sup.metrics.P, "S": sup.metrics.S, "E": sup.metrics.E, "O": sup.metrics.O}
    assert sum(es["counts"].values()) == N_PROBLEMS and es["k"] == N and es["zeta"] == 0.05
    assert es["epsilon"] == pytest.approx(np.log(20) / N)
    assert es["metrics"]["srr"]["value"] == pytest.approx(sup.metrics.srr)
    assert es["metrics"]["nscr"]["lo"] == pytest.approx(sup.lo["nscr"])
    cov = coverage(runs[0], runs[1], N)
    assert sc["coverage"]["counts"] == {"a_only": len(cov.a_only), "b_only": len(cov.b_only),
                                        "both": len(cov.both), "neither": len(cov.neither)}
    assert sc["coverage"]["counts"]["a_only"] == sup.metrics.S and sc["coverage"]["counts"]["both"] == sup.metrics.P
    gap = sampling_efficiency_gap(runs[0], runs[1], N, n_boot=200)
    dse = sc["sampling_efficiency_gap"]
    assert dse["k_ref"] == N  # min(256, 64)
    assert dse["delta_se"]["mean"] == pytest.approx(gap.delta, abs=1e-12)
    assert dse["delta_se"]["lo"] == pytest.approx(gap.lo) and dse["delta_se"]["hi"] == pytest.approx(gap.hi)
    m = sup.metrics
    assert (f"preserved {m.P} of <b>base-7B</b>'s {m.P + m.S} solved problems, expanded to {m.E} new ones "
            f"and lost {m.S}") in text
    assert f"{gap.delta:.3f}" in text
    # the run minus the reference, with intervals and the includes-0 flag, in JSON and on the page
    diffs = sc["differences"]
    assert diffs["net"]["value"] == len(cov.b_only) - len(cov.a_only)
    assert diffs["gained"]["value"] == len(cov.b_only) and diffs["lost"]["value"] == len(cov.a_only)
    assert diffs["delta_pass@1"]["value"] == pytest.approx(runs[1].c.mean() / N - runs[0].c.mean() / N)
    for name in ("delta_pass@1", "delta_pass@k", "net"):
        d = diffs[name]
        assert d["lo"] <= d["value"] <= d["hi"] and d["includes_zero"] == (d["lo"] <= 0 <= d["hi"])
    assert "Differences from base-7B" in text and f"{diffs['delta_pass@1']['value']:+.3f}" in text
    ent = {e["label"]: e for e in res["entropy"]}
    assert set(ent) == {"base-7B", "rl <GRPO> & co"}
    for run in runs:
        a = answer_entropy_run(run, n_boot=200)
        assert ent[run.label]["answer_entropy"]["mean"] == pytest.approx(a.mean, abs=1e-12)
        assert ent[run.label]["token_entropy"]["available"] is False  # the fixture records none
    assert "not available" in text

    with open(out / "passk.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["run", "k", "mean", "lo", "hi"]
    assert len(rows) == 2 * 8
    assert {r["run"] for r in rows} == {"base-7B", "rl <GRPO> & co"}
    first = rows[0]
    assert float(first["mean"]) == pytest.approx(r0["pass_at_k"][0]["mean"])
    with open(out / "per_problem.csv", newline="") as f:
        per = list(csv.DictReader(f))
    assert list(per[0]) == ["run", "problem_id", "n", "c"]
    assert len(per) == 2 * N_PROBLEMS
    assert per[0] == {"run": "base-7B", "problem_id": "prob-0", "n": str(N), "c": str(runs[0].c[0])}


def test_report_single_run_and_errors(tmp_path, runs):
    page = write_report(runs[:1], tmp_path, n_boot=0, title="just base")
    text = page.read_text()
    assert "<title>just base</title>" in text and "nothing to compare" in text
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["crossovers"] == [] and res["runs"][0]["pass_at_k"][0]["lo"] is None
    assert res["support_comparisons"] == [] and res["entropy"][0]["answer_entropy"]["lo"] is None
    with pytest.raises(RlboundError, match="k=65"):
        write_report(runs, tmp_path / "x", extra_ks=(65,), n_boot=0)
    with pytest.raises(RlboundError, match="unique"):
        write_report([runs[0], runs[0]], tmp_path / "y", n_boot=0)
    with pytest.raises(RlboundError, match="no runs"):
        write_report([], tmp_path / "z")


def test_passk_rows(runs):
    rows = passk_rows(runs, extra_ks=(5,), n_boot=50)
    assert len(rows) == 2 * 8
    assert set(rows[0]) == {"run", "k", "mean", "lo", "hi", "problems"}
    assert rows[0]["problems"] == N_PROBLEMS
    assert [r["k"] for r in rows if r["run"] == "base-7B"] == [1, 2, 4, 5, 8, 16, 32, 64]
    json.dumps(rows)  # CLI --json
    assert all(r["lo"] <= r["mean"] <= r["hi"] for r in rows)


def test_report_support_at_common_k_and_token_entropy(tmp_path, runs):
    base, rl = runs
    # the RL run has only 32 samples per problem and records token entropies (one NaN)
    rl32 = RunSamples(rl.label, rl.problem_ids, [c[:32] for c in rl.correct], [a[:32] for a in rl.answers],
                      entropy_means=[np.full(32, 0.5 + i / 100) for i in range(N_PROBLEMS)])
    rl32.entropy_means[0][0] = np.nan
    page = write_report([base, rl32], tmp_path, n_boot=50)
    res = json.loads((tmp_path / "results.json").read_text())
    (sc,) = res["support_comparisons"]
    assert sc["k"] == 32 and sc["sampling_efficiency_gap"]["k_ref"] == 32
    sup = empirical_support(base, rl32, 32, n_boot=50)
    assert sc["empirical_support"]["counts"] == {"P": sup.metrics.P, "S": sup.metrics.S,
                                                 "E": sup.metrics.E, "O": sup.metrics.O}
    gap = sampling_efficiency_gap(base, rl32, 32, n_boot=50)
    assert sc["sampling_efficiency_gap"]["delta_se"]["mean"] == pytest.approx(gap.delta, abs=1e-12)
    tok = res["entropy"][1]["token_entropy"]
    assert tok["available"] is True and tok["n_samples_missing"] == 1
    assert tok["mean"] == pytest.approx(np.mean([0.5 + i / 100 for i in range(N_PROBLEMS)]))
    text = page.read_text()
    assert f"{tok['mean']:.3f}" in text and "1 of 1600 samples had no token entropy" in text
