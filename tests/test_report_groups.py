"""The report hooks the lab calls: ``groups`` (pass@1 / pass@k per problem group), ``stages`` and ``training``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rlbound.analysis.groups import group_pass_at_k
from rlbound.analysis.samples import RunSamples
from rlbound.errors import RlboundError
from rlbound.report.html import write_report


pytestmark = pytest.mark.usefixtures("quiet")


def _run(label, rows):
    """rows: per problem (n, c); the first c samples are the correct ones."""
    correct = [np.arange(n) < c for n, c in rows]
    answers = [["1" if x else "0" for x in r] for r in correct]
    return RunSamples(label, [f"p{i}" for i in range(len(rows))], correct, answers,
                      statuses=[["ok"] * len(r) for r in correct])


GROUPS = {"p0": "tree", "p1": "tree", "p2": "chain", "p3": "chain"}  # p4 in no group


@pytest.fixture
def runs():
    a = _run("A", [(4, 4), (4, 0), (4, 2), (4, 1), (4, 4)])
    b = _run("B", [(4, 1), (4, 0), (3, 3), (4, 2), (2, 2)])
    return [a, b]


def test_group_pass_at_k_hand_computed(runs):
    g = group_pass_at_k(runs, GROUPS, n_boot=50)
    # largest common k over the grouped problems: B's p2 has n = 3 (B's p4, ungrouped, does not count)
    assert g.k == 3 and g.groups == ["chain", "tree"] and g.ungrouped == {"A": 1, "B": 1}
    cells = {(c.run, c.group): c for c in g.cells}
    # pass@3 with n = 4: c = 1 -> 1 - C(3,3)/C(4,3) = 3/4; c >= 2 -> 1
    expect = {("A", "tree"): (0.5, 0.5), ("A", "chain"): (0.375, 0.875),
              ("B", "tree"): (0.125, 0.375), ("B", "chain"): (0.75, 1.0)}
    for key, (p1, pk) in expect.items():
        assert cells[key].n_problems == 2
        assert cells[key].pass1[0] == pytest.approx(p1) and cells[key].passk[0] == pytest.approx(pk)
        assert cells[key].pass1[1] <= p1 <= cells[key].pass1[2]
    with pytest.raises(RlboundError, match="name none of the runs' problem ids"):
        group_pass_at_k(runs, {"zz": "tree"}, n_boot=10)


STAGES = [{"name": "pretrain <tiny>", "wall_s": 12.25, "cached": True, "steps": 450},
          {"name": "sample", "wall_s": 3, "cached": False}]


def test_report_has_group_and_stage_sections(tmp_path, runs):
    page = write_report(runs, tmp_path / "out", n_boot=50, groups=GROUPS, stages=STAGES)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["groups"]["k"] == 3 and results["groups"]["groups"] == ["chain", "tree"]
    cell = next(c for c in results["groups"]["cells"] if c["run"] == "B" and c["group"] == "tree")
    assert cell["pass_at_1"]["mean"] == pytest.approx(0.125) and cell["pass_at_k"]["mean"] == pytest.approx(0.375)
    assert results["stages"] == STAGES
    html = page.read_text()
    assert "<h2>By problem group</h2>" in html and "<th>pass@3</th>" in html
    assert "0.875" in html  # A chain pass@3
    assert "<h2>Stages</h2>" in html and "pretrain &lt;tiny&gt;" in html and "reused from cache" in html
    assert "steps=450" in html and "<td>15.2</td>" in html  # total wall time 12.25 + 3


def test_without_hooks_no_sections(tmp_path, runs):
    page = write_report(runs, tmp_path / "out", n_boot=20)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["groups"] is None and results["stages"] == []
    html = page.read_text()
    assert "By problem group" not in html and "<h2>Stages</h2>" not in html


@pytest.mark.parametrize("stage, fragment", [
    ({"wall_s": 1.0, "cached": False}, "non-empty string 'name'"),
    ({"name": "x", "cached": False}, "'wall_s'"),
    ({"name": "x", "wall_s": -1, "cached": False}, "'wall_s'"),
    ({"name": "x", "wall_s": 1.0, "cached": "yes"}, "'cached'"),
])
def test_bad_stages_are_refused(tmp_path, runs, stage, fragment):
    with pytest.raises(RlboundError, match=fragment):
        write_report(runs, tmp_path / "out", n_boot=0, stages=[stage])


def test_report_draws_training_curves_and_refuses_rows_without_a_step(tmp_path, runs):
    import base64
    import re

    training = {"B": [{"step": s, "accuracy": 0.1 * s, "kl": 0.01 * s, "entropy": 0.5, "response_length": 30}
                      for s in range(6)]}
    page = write_report(runs, tmp_path / "out", n_boot=20, training=training)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["training"] == training
    html = page.read_text()
    section = html[html.index("<h2>RL training</h2>"):]
    png = base64.b64decode(re.search(r'src="data:image/png;base64,([^"]+)"', section).group(1))
    assert png.startswith(b"\x89PNG")
    plain = write_report(runs, tmp_path / "plain", n_boot=20).read_text()
    assert "RL training" not in plain
    with pytest.raises(RlboundError, match="training row 1 of 'B' needs an integer 'step'"):
        write_report(runs, tmp_path / "bad", n_boot=20, training={"B": [{"step": 0}, {"accuracy": 1.0}]})


def test_training_figure_draws_k1_for_a_run_whose_k3_exploded(tmp_path, runs):
    calm = [{"step": s, "accuracy": 0.1, "kl": 0.01 * s, "kl_k1": 0.02 * s} for s in range(4)]
    wild = [{"step": s, "accuracy": 0.1, "kl": 10.0 ** (s + 1), "kl_k1": 0.5 * s} for s in range(4)]
    old = [{"step": s, "accuracy": 0.1, "kl": 10.0 ** (s + 1)} for s in range(4)]  # metrics from before kl_k1
    page = write_report(runs, tmp_path / "out", n_boot=0, training={"A": calm, "B": wild, "C": old}).read_text()
    note = page[page.index("<h2>RL training</h2>"):]
    note = note[note.index('<p class="note">'):note.index("</p>")]
    assert "For B (marked \"(k1)\"), k3 exceeded 10" in note and "kl_k1: k1" in note
    assert "For A" not in note and "C" not in note.split("For ")[1].split("(marked")[0]
    # results.json keeps every row as logged: the swap is the figure's only
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["training"]["B"] == wild
