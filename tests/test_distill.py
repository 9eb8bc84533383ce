"""rlbound distill: SFT of a student on a teacher's verified-correct samples, tiny and HF students,
resume and refusals, and the recipe sample → distill → train → report through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rlbound.distill import correct_examples, distill_run
from rlbound.engines.base import SamplingParams, load_engine
from rlbound.engines.tiny.checkpoint import load_model, save_model
from rlbound.engines.tiny.model import TinyConfig, TinyLlama
from rlbound.engines.tiny.tokenizer import CharTokenizer
from rlbound.errors import RlboundError
from rlbound.store import load_run

pytestmark = pytest.mark.usefixtures("one_torch_thread", "quiet")

SMALL = TinyConfig(d_model=64, n_layers=2, n_heads=2, d_ff=128, max_seq_len=64)
TRAIN = ["-O", "n=30", "-O", "difficulty=1", "-O", "offset=1000"]  # training problems, away from the test ones


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A small arithmetic model trained briefly (it solves some difficulty-1 problems), and its
    run of 8 samples on each of 30 training problems."""
    from rlbound.engines.tiny.train import fit_arithmetic_model
    from rlbound.progress import set_quiet
    from rlbound.sampler import sample_run
    from rlbound.tasks.synthetic import arithmetic_task
    from rlbound.verify.base import load_verifier

    set_quiet(True)
    root = tmp_path_factory.mktemp("teacher")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fit_arithmetic_model(root / "model", difficulty=1, n_train=1000, steps=100, batch_size=32, lr=1e-2,
                             warmup=10, config=SMALL, eval_n=0)
        task = arithmetic_task(n=30, difficulty=1, offset=1000)
        sample_run(root / "run", task, load_engine("tiny", str(root / "model")), load_verifier("exact"),
                   SamplingParams(max_tokens=24), 8, label="teacher")
    finally:
        torch.set_num_threads(before)
        set_quiet(False)
    return {"model": root / "model", "run": root / "run"}


def _student(path: Path, seed: int = 5) -> Path:
    torch.manual_seed(seed)
    return save_model(TinyLlama(SMALL), CharTokenizer(), path)


def _mean_logprob(engine, pairs) -> float:
    scores = engine.score([p for p, _ in pairs], [c for _, c in pairs])
    return float(np.mean([np.mean(s.token_logprobs) for s in scores]))


def test_correct_examples_keep_correct_samples_that_ended_on_their_own():
    rows = [
        {"problem_id": "a", "completion": "x", "correct": True, "finish_reason": "stop"},
        {"problem_id": "a", "completion": "y", "correct": False, "finish_reason": "stop"},
        {"problem_id": "a", "completion": "z", "correct": True, "finish_reason": "length"},  # cut off
        {"problem_id": "b", "completion": "u", "correct": True, "finish_reason": None},  # imported: unknown
        {"problem_id": "a", "completion": "x", "correct": True, "finish_reason": "stop"},
        {"problem_id": "a", "completion": "w", "correct": True, "finish_reason": "stop"},
    ]
    prompts = {"a": "A: ", "b": "B: "}
    assert correct_examples(rows, prompts) == [("A: ", "x"), ("B: ", "u"), ("A: ", "x"), ("A: ", "w")]
    assert correct_examples(rows, prompts, unique=True) == [("A: ", "x"), ("B: ", "u"), ("A: ", "w")]
    assert correct_examples(rows, prompts, max_per_problem=1) == [("A: ", "x"), ("B: ", "u")]


def test_tiny_student_learns_the_teachers_correct_samples(teacher, tmp_path):
    student = _student(tmp_path / "student")
    table = load_run(teacher["run"]).table.to_pylist()
    expected = sum(bool(r["correct"]) and r["finish_reason"] == "stop" for r in table)
    assert 5 <= expected < len(table), "the teacher should solve some problems, not all"

    result = distill_run(teacher["run"], student, tmp_path / "out", steps=40, lr=3e-3, batch_size=16)
    assert result.examples == expected and result.steps == 40 and not result.already_done
    record = json.loads((tmp_path / "out" / "distill.json").read_text())
    assert record["status"] == "done" and record["examples"] == expected
    assert record["teachers"][0]["template"] == "plain" and record["teachers"][0]["samples"] == len(table)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 40 and losses[-1] < 0.5 * losses[0]

    # The prompts are the run's template rendered as the sampler rendered it; the distilled model
    # (a tiny model directory) gives the teacher's correct completions a much higher likelihood.
    from rlbound.tasks.synthetic import arithmetic_task

    questions = {p.id: p.prompt for p in arithmetic_task(n=30, difficulty=1, offset=1000).problems}
    pairs = [(f"Q: {questions[r['problem_id']]}\nA: ", r["completion"]) for r in table
             if r["correct"] and r["finish_reason"] == "stop"]
    before = _mean_logprob(load_engine("tiny", str(student)), pairs)
    after = _mean_logprob(load_engine("tiny", str(result.model_dir)), pairs)
    assert after > before + 1.0, (before, after)
    model, _ = load_model(result.model_dir)
    assert model.config == SMALL


def test_distill_resumes_exactly_and_refuses_other_settings(teacher, tmp_path):
    student = _student(tmp_path / "student")
    kw = dict(steps=12, lr=3e-3, batch_size=8, checkpoint_every=4)
    straight = distill_run(teacher["run"], student, tmp_path / "straight", **kw)
    part = distill_run(teacher["run"], student, tmp_path / "split", stop_at=6, **kw)
    assert part.steps == 6 and (tmp_path / "split" / "checkpoint" / "state.pt").is_file()
    assert not (tmp_path / "split" / "model").exists()
    resumed = distill_run(teacher["run"], student, tmp_path / "split", **kw)
    assert resumed.resumed_at == 6 and resumed.steps == 12
    a, _ = load_model(straight.model_dir)
    b, _ = load_model(resumed.model_dir)
    for x, y in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(x, y)
    metrics = (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
    assert metrics == (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()
    assert not (tmp_path / "split" / "checkpoint").exists()

    again = distill_run(teacher["run"], student, tmp_path / "split", **kw)
    assert again.already_done and again.final_loss == resumed.final_loss
    with pytest.raises(RlboundError, match=r"other settings \(lr: "):
        distill_run(teacher["run"], student, tmp_path / "split", **{**kw, "lr": 1e-3})
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    with pytest.raises(RlboundError, match="not empty"):
        distill_run(teacher["run"], student, tmp_path / "foreign", **kw)
    with pytest.raises(RlboundError, match="cannot be trained here"):
        distill_run(teacher["run"], student, tmp_path / "x", engine="vllm")


def test_hf_student_trains_like_the_same_weights_as_a_tiny_model(teacher, tmp_path):
    """An exported tiny student trained through transformers follows the tiny student's loss
    curve: the same prompts, completion tokens, EOS and loss mask, on the same weights."""
    from rlbound.engines.tiny.export import export_hf

    student = _student(tmp_path / "student", seed=7)
    export_hf(student, tmp_path / "student-hf")
    kw = dict(steps=4, lr=1e-3, batch_size=8, max_per_problem=2)
    tiny = distill_run(teacher["run"], student, tmp_path / "tiny", **kw)
    hf = distill_run(teacher["run"], tmp_path / "student-hf", tmp_path / "hf", engine="hf", **kw)
    read = lambda d: [json.loads(x)["loss"] for x in (d / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    assert hf.examples == tiny.examples
    assert read(tmp_path / "hf") == pytest.approx(read(tmp_path / "tiny"), rel=1e-4)
    # The output is a Hugging Face model directory that the hf engine samples from.
    assert (hf.model_dir / "config.json").is_file() and (hf.model_dir / "tokenizer.json").is_file()
    out = load_engine("hf", str(hf.model_dir)).generate(["Q: 3+4\nA: "], SamplingParams(max_tokens=8), [[1]])
    assert out[0][0].token_ids


@pytest.mark.slow
def test_recipe_sample_distill_train_report(teacher, tmp_path):
    """The whole recipe through the CLI: sample the teacher on training problems, distil a fresh
    student on its verified-correct samples, RL-train the distilled model, sample every model on
    the test problems, report."""
    from typer.testing import CliRunner

    from rlbound.cli import app

    def cli(*args):
        result = CliRunner().invoke(app, ["--quiet", *map(str, args)])
        assert result.exit_code == 0, (result.output, result.exception)
        return result.output

    student = _student(tmp_path / "student")
    cli("sample", "--task", "arithmetic", *TRAIN, "--engine", "tiny", "--model", teacher["model"],
        "--out", tmp_path / "teacher-train", "-n", 8, "--max-tokens", 24)
    said = cli("distill", "--run", tmp_path / "teacher-train", "--model", student, "--out", tmp_path / "distilled",
               "--steps", 60, "--lr", 3e-3, "--batch-size", 16)
    assert f"model: {tmp_path / 'distilled' / 'model'}" in said
    cli("train", "--model", tmp_path / "distilled" / "model", "--task", "arithmetic", "-O", "n=20", "-O", "difficulty=1",
        "-O", "offset=2000", "--steps", 3, "--prompts-per-step", 4, "--group-size", 4, "--max-tokens", 24,
        "--out", tmp_path / "rl")
    runs = {"base": student, "distilled": tmp_path / "distilled" / "model", "rl": tmp_path / "rl" / "model"}
    for label, model in runs.items():
        cli("sample", "--task", "arithmetic", "-O", "n=30", "-O", "difficulty=1", "--engine", "tiny",
            "--model", model, "--out", tmp_path / f"eval-{label}", "-n", 8, "--max-tokens", 24, "--label", label)
    cli("report", *(tmp_path / f"eval-{label}" for label in runs), "--out", tmp_path / "report")
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    assert [r["label"] for r in results["runs"]] == list(runs)
    solved = {label: int(load_run(tmp_path / f"eval-{label}").samples.c.astype(bool).sum()) for label in runs}
    assert solved["base"] == 0 < solved["distilled"], solved  # imitation gave the random student its skill
