"""The tiny engine in bfloat16 (rlbound.engines.precision): the format is chosen, recorded and
checked on resume; samples reproduce per seed within one format; and a trained model's greedy
completions in float32 and bfloat16 mostly agree (the share is measured and printed)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from rlbound.engines.base import SamplingParams, load_engine
from rlbound.engines.precision import native_bfloat16, resolve_dtype
from rlbound.errors import RlboundError
from rlbound.tasks.base import load_task
from rlbound.tasks.templates import get_template
from tests.test_cli import assert_one_line_error
from tests.test_end_to_end import _random_tiny_model, _sample_cmd

PROMPTS = ["Q: 3+4\nA: ", "Q: 12-5\nA: ", "Q: 6*7\nA: "]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return _random_tiny_model(tmp_path_factory.mktemp("bf16-model") / "m", seed=5)


def test_auto_is_bfloat16_exactly_where_the_cpu_has_it_and_bad_names_are_one_line(model_dir):
    auto = load_engine("tiny", str(model_dir))
    want = "bfloat16" if native_bfloat16("cpu") else "float32"
    assert auto.info().details["dtype"] == want
    assert next(auto.model.parameters()).dtype == getattr(torch, want)
    assert load_engine("tiny", str(model_dir), dtype="fp32").info().details["dtype"] == "float32"
    assert resolve_dtype("bf16") is torch.bfloat16
    with pytest.raises(RlboundError, match=r"tiny engine: dtype 'float16' is not one of auto, float32, bfloat16"):
        load_engine("tiny", str(model_dir), dtype="float16")


def test_bfloat16_samples_reproduce_per_seed_and_differ_between_seeds(model_dir):
    engine = load_engine("tiny", str(model_dir), dtype="bfloat16", batch_size=64)
    params = SamplingParams(temperature=1.0, max_tokens=24)
    seeds = [[1, 2, 3], [4], [5, 6]]
    first = engine.generate(PROMPTS, params, seeds)
    again = engine.generate(PROMPTS, params, seeds)
    for a_row, b_row in zip(first, again):
        for a, b in zip(a_row, b_row):
            assert a.token_ids == b.token_ids and a.token_logprobs == b.token_logprobs
    assert len({s.text for s in first[0]}) == 3
    # log-probs are read off float32 logits: finite, and what score() computes within bfloat16's rounding
    flat = [(p, s) for p, row in zip(PROMPTS, first) for s in row]
    scores = engine.score([p for p, _ in flat], [s.text for _, s in flat])
    # (a random model also samples special tokens, which a completion's text drops: those are skipped)
    same_tokens = [(s, sc) for (_, s), sc in zip(flat, scores) if sc.token_ids == s.token_ids]
    assert same_tokens
    worst = max(abs(x - y) for s, sc in same_tokens for x, y in zip(sc.token_logprobs, s.token_logprobs))
    assert worst < 0.05, worst


def test_greedy_float32_and_bfloat16_agree_on_most_problems_of_a_trained_model(exported_arithmetic_model):
    model = str(exported_arithmetic_model["tiny"])
    task = load_task("arithmetic", n=40, difficulty=1)
    template = get_template(task.template)
    prompts = [template.render(p.prompt) for p in task.problems]
    params = SamplingParams(temperature=0.0, max_tokens=24)
    outputs = {dtype: load_engine("tiny", model, dtype=dtype).generate(prompts, params, [[0]] * len(prompts))
               for dtype in ("float32", "bfloat16")}
    same = sum(a[0].text == b[0].text for a, b in zip(outputs["float32"], outputs["bfloat16"]))
    print(f"greedy completions equal in float32 and bfloat16: {same} of {len(prompts)}")
    assert same >= 0.8 * len(prompts)
    assert same < len(prompts) or outputs["float32"][0][0].token_logprobs != outputs["bfloat16"][0][0].token_logprobs


def test_a_run_records_its_format_and_refuses_to_resume_in_another(tmp_path, model_dir):
    run = tmp_path / "run"
    cmd = _sample_cmd(model_dir, run, n=2, problems=3, max_tokens=6)
    done = subprocess.run(cmd + ["-E", "dtype=float32"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    meta = json.loads((run / "run.json").read_text())
    assert meta["config"]["dtype"] == "float32"
    refused = subprocess.run(cmd + ["-E", "dtype=bfloat16", "-n", "4"], capture_output=True, text=True)
    assert_one_line_error(refused, "dtype: the run has 'float32', this command asks 'bfloat16'",
                          "pass -E dtype=float32 to resume it")
    # a tiny run recorded before the format was kept ran in float32, and resumes only in float32
    del meta["config"]["dtype"]
    (run / "run.json").write_text(json.dumps(meta))
    refused = subprocess.run(cmd + ["-E", "dtype=bfloat16", "-n", "4"], capture_output=True, text=True)
    assert_one_line_error(refused, "pass -E dtype=float32")
    resumed = subprocess.run([*cmd[:cmd.index("-n")], "-n", "4", *cmd[cmd.index("-n") + 2:], "-E", "dtype=float32"],
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((run / "run.json").read_text())["n"] == 4


def test_the_cli_passes_dtype_to_the_tiny_engine(tmp_path, model_dir):
    out = tmp_path / "bf16"
    done = subprocess.run(_sample_cmd(model_dir, out, n=2, problems=2, max_tokens=6) + ["-E", "dtype=bfloat16"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "run.json").read_text())["config"]["dtype"] == "bfloat16"
    bad = subprocess.run([sys.executable, "-m", "rlbound.cli", "sample", "--task", "arithmetic", "--engine", "tiny",
                          "--model", str(model_dir), "--out", str(tmp_path / "x"), "-n", "1", "-E", "dtype=int8"],
                         capture_output=True, text=True)
    assert_one_line_error(bad, "dtype 'int8' is not one of auto, float32, bfloat16")


def test_training_in_bfloat16_keeps_float32_weights_and_samples_rollouts_in_bfloat16(tmp_path, model_dir):
    from rlbound.engines.tiny import load_model
    from rlbound.engines.tiny.train import train_next_token
    from rlbound.train.config import TrainerConfig
    from rlbound.train.loop import train_rl
    from rlbound.train.policy import load_policy

    texts = [f"Q: {a}+{b}\nA: {a + b}" for a in range(10) for b in range(10)]
    fitted = train_next_token(str(model_dir), texts, steps=30, batch_size=16, lr=3e-3, warmup=2,
                              out_dir=tmp_path / "sft", dtype="bfloat16")
    assert fitted.losses[-1] < fitted.losses[0]
    model, _ = load_model(tmp_path / "sft")
    assert next(model.parameters()).dtype == torch.float32
    assert json.loads((tmp_path / "sft" / "config.json").read_text())["meta"]["training"]["dtype"] == "bfloat16"

    policy = load_policy(tmp_path / "sft", dtype="bfloat16")
    assert policy.engine().info().details["dtype"] == "bfloat16"
    assert next(policy.model.parameters()).dtype == torch.float32
    config = TrainerConfig(algo="grpo", steps=2, prompts_per_step=2, group_size=2, max_tokens=8, dtype="bfloat16",
                           reward="random")  # rewards that vary within a group: the update is not zero
    result = train_rl(tmp_path / "sft", load_task("arithmetic", n=4, difficulty=1), config, tmp_path / "rl")
    assert len(result.metrics) == 2
    trained, _ = load_model(result.model_dir)
    before, _ = load_model(tmp_path / "sft")
    assert any(not torch.equal(a, b) for a, b in zip(trained.parameters(), before.parameters()))


@pytest.mark.parametrize("t", [5, 96, 300])
def test_causal_attention_matches_the_fused_kernel_in_values_and_gradients(t):
    """Short bfloat16 sequences take the explicit path (two matmuls around a float32 softmax),
    long ones and float32 the fused kernel; either way the result and its gradients are torch's
    causal attention, up to bfloat16 rounding."""
    from rlbound.engines.tiny.model import EXPLICIT_ATTENTION_MAX_LEN, causal_attention

    gen = torch.Generator().manual_seed(t)
    base = [torch.randn(3, 2, t, 16, generator=gen) for _ in range(3)]
    out_grad = torch.randn(3, 2, t, 16, generator=gen)

    def run(fn, dtype):
        leaves = [x.to(dtype).clone().requires_grad_() for x in base]
        out = fn(*leaves)
        out.float().backward(out_grad)
        return out.float(), [x.grad.float() for x in leaves]

    fused = lambda q, k, v: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)  # noqa: E731
    want, want_grads = run(fused, torch.float32)
    got, got_grads = run(causal_attention, torch.bfloat16)
    assert (t <= EXPLICIT_ATTENTION_MAX_LEN) == (t < 300)
    assert torch.allclose(got, want, atol=3e-2, rtol=3e-2)
    for g, w in zip(got_grads, want_grads):
        assert torch.allclose(g, w, atol=5e-2, rtol=5e-2)
    # the future never leaks in: the first position attends to itself alone
    assert torch.allclose(got[:, :, 0], base[2][:, :, 0].to(torch.bfloat16).float(), atol=1e-2)
    same, _ = run(causal_attention, torch.float32)
    assert torch.allclose(same, want, atol=1e-5)
