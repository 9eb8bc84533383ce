"""Contamination probe: word splits, LCS / ROUGE-L, scores, the runner with a fake engine, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from rlbound.analysis.contamination import (
    continuation_scores,
    lcs_length,
    probe_summary,
    rouge_l_f1,
    split_prompt,
)
from rlbound.engines.base import Engine, EngineInfo, Sample, TokenScores
from rlbound.errors import RlboundError
from rlbound.probe import run_probe, write_probe
from rlbound.tasks.base import Problem, Task
from rlbound.verify.base import load_verifier


pytestmark = pytest.mark.usefixtures("quiet")


def test_split_by_words():
    text = "a b c d e"
    assert split_prompt(text, 40) == ("a b", "c d e")
    assert split_prompt(text, 60) == ("a b c", "d e")
    assert split_prompt(text, 80) == ("a b c d", "e")
    assert split_prompt(text, 10) == ("a", "b c d e")  # floor(0.5) = 0, at least one word
    assert split_prompt(text, 99) == ("a b c d", "e")  # at most W - 1 words
    assert split_prompt("  x =  3,\ny  is 4 ", 50) == ("  x =  3,", "y  is 4 ")  # spacing kept
    with pytest.raises(RlboundError, match="between 0 and 100"):
        split_prompt(text, 100)
    with pytest.raises(RlboundError, match="cannot be split"):
        split_prompt("one", 50)


def _lcs_table(a, b):
    """Reference O(|a||b|) dynamic programme, to check the bit-parallel LCS."""
    t = np.zeros((len(a) + 1, len(b) + 1), dtype=int)
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            t[i + 1, j + 1] = t[i, j] + 1 if x == y else max(t[i, j + 1], t[i + 1, j])
    return int(t[-1, -1])


def test_lcs_hand_examples_and_against_the_table():
    assert lcs_length("A B C B D A B".split(), "B D C A B A".split()) == 4  # CLRS's example
    assert lcs_length([], ["a"]) == 0 and lcs_length(["a"], ["b"]) == 0
    rng = np.random.default_rng(0)
    for _ in range(200):
        a = [str(x) for x in rng.integers(0, 4, rng.integers(0, 70))]
        b = [str(x) for x in rng.integers(0, 4, rng.integers(0, 70))]
        assert lcs_length(a, b) == _lcs_table(a, b)


def test_rouge_l_f1_hand_computed():
    # LCS 5 of 6 and 6 tokens: P = R = 5/6
    assert rouge_l_f1("the cat sat on the mat", "the cat lay on the mat") == pytest.approx(5 / 6)
    # LCS 2: P = 2/2, R = 2/4, F1 = 2 * 1 * 0.5 / 1.5 = 2/3
    assert rouge_l_f1("a b", "a b c d") == pytest.approx(2 / 3)
    assert rouge_l_f1("x y", "a b") == 0.0 and rouge_l_f1("", "a") == 0.0
    assert rouge_l_f1("A b", "a b") == pytest.approx(0.5)  # case-sensitive


def test_continuation_scored_on_a_window_the_length_of_the_rest():
    assert continuation_scores(" c d e. Then the answer is 7", "c d e.") == (True, 1.0)
    exact, rouge = continuation_scores("c x e and more", "c d e")
    assert not exact and rouge == pytest.approx(2 / 3)  # window "c x e": LCS 2 of 3 and 3
    assert continuation_scores("", "c d") == (False, 0.0)


def test_probe_summary_means_and_bands():
    s = probe_summary(40, [True, False, False, True], [1.0, 0.5, 0.0, 0.5], [True, True, False, False], n_boot=200)
    assert s.n_problems == 4
    assert s.exact_match[0] == pytest.approx(0.5) and s.rouge_l[0] == pytest.approx(0.5)
    assert s.answer_accuracy[0] == pytest.approx(0.5)
    assert 0.0 <= s.exact_match[1] <= 0.5 <= s.exact_match[2] <= 1.0
    flat = probe_summary(60, [True] * 3, [1.0] * 3, [False] * 3, n_boot=50)
    assert flat.exact_match == (1.0, 1.0, 1.0) and flat.answer_accuracy == (0.0, 0.0, 0.0)
    with pytest.raises(RlboundError, match="one value per problem"):
        probe_summary(40, [True], [1.0, 0.5], [True])


class MemorisingEngine(Engine):
    """Continues problem "mem"'s text word for word (then answers); babbles on every other text."""

    name = "fake"

    def __init__(self, texts: dict[str, str]):
        self.texts = texts
        self.prompts: list[str] = []

    def generate(self, prompts, params, seeds):
        assert params.temperature == 0.0
        self.prompts += list(prompts)
        out = []
        for prompt in prompts:
            full = self.texts["mem"]
            text = " " + full[len(prompt):].lstrip() + " \\boxed{7}" if full.startswith(prompt) else " zzz \\boxed{7}"
            out.append([Sample(text, [0], "stop", [0.0])])
        return out

    def score(self, prompts, completions):
        return [TokenScores([], [])]

    def info(self):
        return EngineInfo("fake", "memoriser")


def _task():
    problems = (
        Problem("mem", "What is three plus four if you add them?", "7"),
        Problem("new", "Compute the sum of two and two here please", "4"),
        Problem("short", "12", "12"),
    )
    return Task("hand", problems, "exact", "plain")


def test_run_probe_with_a_memorising_engine(tmp_path):
    engine = MemorisingEngine({"mem": _task().problems[0].prompt})
    result = run_probe(_task(), engine, load_verifier("exact"), n_boot=100)
    assert result.skipped == ["short"]
    assert [s.percent for s in result.shares] == [40.0, 60.0, 80.0]
    # "mem" (9 words) is continued exactly: 40 % -> first 3 words given.
    assert engine.prompts[0] == "What is three"
    for share in result.shares:
        assert share.n_problems == 2
        assert share.exact_match[0] == pytest.approx(0.5)  # mem exact, new not
        assert share.answer_accuracy[0] == pytest.approx(0.5)  # \boxed{7}: right for mem, wrong for new
    new_40 = next(r for r in result.rows if r["problem_id"] == "new" and r["percent"] == 40.0)
    # "new" has 9 words; 40 % -> 3 given, rest = 6 words; window " zzz \boxed{7}" shares none of them
    assert new_40["rest"] == "of two and two here please" and new_40["rouge_l_f1"] == 0.0
    path = write_probe(result, tmp_path / "probe")
    stored = json.loads(path.read_text())
    assert stored["settings"]["percents"] == [40.0, 60.0, 80.0] and stored["settings"]["template"] == "raw"
    assert len(stored["problems"]) == 6 and stored["summary"][0]["exact_match"]["mean"] == pytest.approx(0.5)
    with pytest.raises(RlboundError, match="between 0 and 100"):
        run_probe(_task(), engine, load_verifier("exact"), percents=(0,))


def test_cli_probe_with_a_tiny_model(tmp_path):
    torch = pytest.importorskip("torch")
    from rlbound.engines.tiny.checkpoint import save_model
    from rlbound.engines.tiny.model import TinyConfig, TinyLlama
    from rlbound.engines.tiny.tokenizer import CharTokenizer

    torch.manual_seed(0)
    model = save_model(TinyLlama(TinyConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64)), CharTokenizer(),
                       tmp_path / "model")
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps({"id": f"q{i}", "problem": f"What is {i} plus {i} in this sum?",
                                         "answer": str(2 * i)}) + "\n" for i in range(3)))
    out = tmp_path / "probe"
    result = subprocess.run(
        [sys.executable, "-m", "rlbound.cli", "--quiet", "probe", "--task", str(tasks), "--engine", "tiny",
         "--model", str(model), "--out", str(out), "--max-tokens", "12", "-p", "50"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "50 %" in result.stdout and "exact match" in result.stdout
    stored = json.loads((out / "probe.json").read_text())
    assert stored["settings"]["engine"] == "tiny" and len(stored["problems"]) == 3
    for row in stored["problems"]:
        assert row["prompt"] == " ".join(row["prompt"].split()) and len(row["prompt"].split()) == 4
        assert (row["exact_match"], row["rouge_l_f1"]) == continuation_scores(row["continuation"], row["rest"])
