"""Tests of next-token training of tiny models (rlbound.engines.tiny.train), on small budgets."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from rlbound.engines.base import SamplingParams, load_engine
from rlbound.engines.tiny import CharTokenizer, TinyConfig
from rlbound.engines.tiny.checkpoint import load_model
from rlbound.engines.tiny.train import (
    ARITH_TRAIN_OFFSET,
    IGNORE,
    arithmetic_examples,
    encode_examples,
    fit_arithmetic_model,
    heldout_is_disjoint,
    lr_at,
    train_next_token,
)
from rlbound.errors import RlboundError
from rlbound.tasks.synthetic import arithmetic_task

CFG = TinyConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64, max_seq_len=80)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_encode_masks_prompt_tokens():
    tok = CharTokenizer()
    ids, targets, lengths = encode_examples([("Q: 1\nA: ", "12"), "ab"], tok, 64)
    # row 0: <bos> Q : _ 1 \n A : _ 1 2 <eos>  -> loss on "1", "2", <eos> only
    assert lengths.tolist() == [12, 4]
    learned = targets[0][targets[0] != IGNORE].tolist()
    assert learned == tok.encode("12") + [tok.eos_id]
    assert (targets[0, :8] == IGNORE).all()  # predictions made at prompt positions 0..7 are masked
    assert targets[0, 8] == tok.encode("1")[0]  # position 8 (the last prompt char) predicts "1"
    # a plain text learns every token after BOS
    assert targets[1][targets[1] != IGNORE].tolist() == tok.encode("ab") + [tok.eos_id]
    assert (ids[1, 4:] == tok.pad_id).all()
    with pytest.raises(RlboundError, match="max_seq_len"):
        encode_examples(["x" * 100], tok, 64)


def test_lr_schedule():
    assert lr_at(0, 100, 10, 0.1) == pytest.approx(0.1)
    assert lr_at(9, 100, 10, 0.1) == pytest.approx(1.0)
    assert lr_at(55, 100, 10, 0.1) == pytest.approx(0.55)
    assert lr_at(100, 100, 10, 0.1) == pytest.approx(0.1)
    values = [lr_at(s, 100, 10, 0.1) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_short_training_lowers_the_loss_and_is_deterministic(tmp_path):
    examples = arithmetic_examples(1, 200, seed=0)
    a = train_next_token(CFG, examples, steps=40, batch_size=16, lr=1e-2, warmup=5, seed=3,
                         out_dir=tmp_path / "m")
    first, last = sum(a.losses[:5]) / 5, sum(a.losses[-5:]) / 5
    assert first > 3.5  # about ln(99) at init
    assert last < 0.75 * first
    b = train_next_token(CFG, examples, steps=40, batch_size=16, lr=1e-2, warmup=5, seed=3)
    assert a.losses == b.losses
    c = train_next_token(CFG, examples, steps=5, batch_size=16, lr=1e-2, warmup=5, seed=4)
    assert c.losses != a.losses[:5]
    # the saved directory is a working tiny model
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["meta"]["training"]["trained_steps"] == 40
    out = load_engine("tiny", str(tmp_path / "m")).generate(
        ["Q: 3+4\nA: "], SamplingParams(max_tokens=12), [[1]])
    assert len(out[0][0].token_ids) >= 1


def test_resume_equals_uninterrupted_training(tmp_path):
    examples = [("Q: a\nA: ", "aa"), ("Q: b\nA: ", "bb"), "free text", ("Q: c\nA: ", "ccc")]
    kw = dict(batch_size=3, lr=5e-3, warmup=3, seed=1)
    straight = train_next_token(CFG, examples, steps=12, **kw)
    part1 = train_next_token(CFG, examples, steps=12, stop_at=5, out_dir=tmp_path / "m",
                             save_state=True, **kw)
    assert part1.losses == straight.losses[:5]
    part2 = train_next_token(tmp_path / "m", examples, steps=12, resume=True, **kw)
    assert part2.losses == straight.losses[5:]
    # one wall time per step run by the call, and they add up to at most the call's time
    assert len(part1.step_s) == 5 and len(part2.step_s) == 7 and all(t > 0 for t in part2.step_s)
    assert sum(part2.step_s) <= part2.wall_s + 1e-6
    for a, b in zip(straight.model.state_dict().values(), part2.model.state_dict().values()):
        assert torch.equal(a, b)
    # without resume, a directory restarts the schedule with a fresh optimizer
    fresh = train_next_token(tmp_path / "m", examples, steps=2, **kw)
    assert len(fresh.losses) == 2 and fresh.losses != straight.losses[5:7]


def test_fit_arithmetic_model_smoke(tmp_path):
    result = fit_arithmetic_model(
        tmp_path / "arith", difficulty=1, n_train=64, steps=4, seed=0, batch_size=8,
        config=CFG, eval_n=3, eval_samples=2,
    )
    assert set(result.accuracy) == {"greedy", "temperature_1"}
    assert all(0.0 <= v <= 1.0 for v in result.accuracy.values())
    model, tok = load_model(result.model_dir)
    assert model.config == CFG
    meta = json.loads((tmp_path / "arith" / "config.json").read_text())["meta"]["training"]
    assert meta["train_offset"] == ARITH_TRAIN_OFFSET and meta["difficulty"] == 1
    assert meta["heldout_disjoint"] is False  # difficulty 1 has too few distinct problems


def test_training_problems_avoid_heldout_ones():
    heldout = frozenset(p.prompt for p in arithmetic_task(n=2000, seed=0, difficulty=2).problems)
    examples = arithmetic_examples(2, 300, seed=0, exclude_prompts=heldout)
    assert len(examples) == 300 and heldout_is_disjoint(examples, heldout)
    assert examples[0][0].startswith("Q: ") and examples[0][0].endswith("\nA: ")
    assert not heldout_is_disjoint(arithmetic_examples(2, 300, seed=0, offset=0), heldout)
    # a space too small to avoid the held-out problems still yields n examples
    tiny_space = frozenset(p.prompt for p in arithmetic_task(n=3000, seed=0, difficulty=1).problems)
    assert len(arithmetic_examples(1, 50, seed=0, exclude_prompts=tiny_space)) == 50


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "auto"])
def test_compiled_training_follows_eager_training_and_is_recorded(tmp_path, dtype):
    """torch.compile'd training (inductor, real C++ kernels) takes the steps eager training takes,
    up to rounding, on batches of different widths (dynamic shapes), and the model records it."""
    examples = arithmetic_examples(1, 120, seed=1)
    kw = dict(steps=8, batch_size=16, lr=1e-2, warmup=2, seed=5, dtype=dtype)
    eager = train_next_token(CFG, examples, **kw)
    compiled = train_next_token(CFG, examples, compile=True, out_dir=tmp_path / "m", **kw)
    tolerance = 1e-4 if dtype == "float32" else 3e-2  # bfloat16: fused and unfused roundings differ more
    assert compiled.losses == pytest.approx(eager.losses, rel=tolerance)
    assert compiled.losses[-1] < compiled.losses[0]
    meta = json.loads((tmp_path / "m" / "config.json").read_text())["meta"]["training"]
    assert meta["compiled"] is True


@pytest.mark.slow
def test_compiled_training_with_two_threads_reproduces_per_seed():
    """Two compiled runs of one seed take the same steps, with two threads (where inductor's
    parallel kernels could add in any order)."""
    torch.set_num_threads(2)
    examples = arithmetic_examples(2, 400, seed=2)
    shape = TinyConfig(d_model=64, n_layers=2, n_heads=2, d_ff=128, max_seq_len=80)
    runs = [train_next_token(shape, examples, steps=20, batch_size=64, lr=3e-3, warmup=2, seed=7,
                             dtype="auto", compile=True).losses for _ in range(2)]
    assert runs[0] == runs[1]


@pytest.mark.slow
def test_two_compiled_fits_of_different_widths_in_one_process():
    """A second compiled fit in the same process, on batches of another fixed width, trains (torch
    2.13 reused the first fit's backward with its strides and failed an inductor size check)."""
    rng = random.Random(0)
    fits = []
    for width in (40, 80):
        texts = ["".join(rng.choice("0123456789+-*=") for _ in range(width)) for _ in range(32)]
        shape = TinyConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64, max_seq_len=128)
        fits.append(train_next_token(shape, texts, steps=2, batch_size=16, warmup=1, compile=True))
    assert [len(f.losses) for f in fits] == [2, 2] and [len(f.step_s) for f in fits] == [2, 2]
    assert all(math.isfinite(loss) for f in fits for loss in f.losses)


def test_compiled_training_without_a_cxx_compiler_is_a_one_line_error(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("CXX", raising=False)
    with pytest.raises(RlboundError, match=r"compiled training needs a C\+\+ compiler .*install one"):
        train_next_token(CFG, arithmetic_examples(1, 20, seed=1), steps=1, batch_size=4, compile=True)
