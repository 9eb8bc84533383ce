"""The training loop: every algorithm runs, an update moves log-probs the right way, resume is exact."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from rlbound.engines.tiny.checkpoint import load_model, save_model
from rlbound.engines.tiny.model import TinyConfig, TinyLlama
from rlbound.engines.tiny.tokenizer import CharTokenizer
from rlbound.errors import RlboundError
from rlbound.tasks.synthetic import arithmetic_task
from rlbound.train.algorithms import ALGORITHMS, get_algorithm
from rlbound.train.config import TrainerConfig
from rlbound.train.loop import train_rl

pytestmark = pytest.mark.usefixtures("quiet", "one_torch_thread")

SMALL = TinyConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64, max_seq_len=96)


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny"
    save_model(TinyLlama(SMALL), CharTokenizer(), path)
    return path


def _config(algo: str, **kw) -> TrainerConfig:
    base = dict(algo=algo, steps=2, prompts_per_step=2, group_size=4, max_tokens=12, lr=1e-3,
                reward="random", reward_p=0.5, checkpoint_every=1, dsrl_switch=1)
    base.update(kw)
    return TrainerConfig(**base)


@pytest.mark.parametrize("algo", sorted(ALGORITHMS) + ["dsrl"])
def test_every_algorithm_trains_and_logs_its_metrics(algo, small_model, tmp_path):
    task = arithmetic_task(n=3, difficulty=1)
    result = train_rl(small_model, task, _config(algo), tmp_path / "run")
    assert [m["step"] for m in result.metrics] == [0, 1]
    for m in result.metrics:
        assert {"reward", "accuracy", "response_length", "kept", "samples", "wall_s"} <= set(m)
        if m["kept"]:
            assert {"loss", "entropy", "clip_fraction", "kl"} <= set(m)
    if algo == "dsrl":
        assert [m["algo"] for m in result.metrics] == ["dsrl/nsr_prerl", "dsrl/grpo"]
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [0, 1]
    trained, _ = load_model(result.model_dir)
    start, _ = load_model(small_model)
    moved = any(not torch.equal(a, b) for a, b in zip(trained.state_dict().values(), start.state_dict().values()))
    assert moved == any(m["kept"] for m in result.metrics)
    assert not (tmp_path / "run" / "checkpoint").exists()


def _logprob(model, tok, prompt: str, response: str) -> float:
    ids = tok.encode(prompt, bos=True) + tok.encode(response, eos=True)
    n_prompt = len(tok.encode(prompt, bos=True))
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])), -1)[0]
    return float(sum(logp[t - 1, ids[t]] for t in range(n_prompt, len(ids))))


@pytest.mark.parametrize("algo", ["grpo", "prerl", "nsr", "psr", "ppo"])
def test_one_update_raises_the_rewarded_response_and_lowers_the_other(algo):
    from rlbound.train.loop import _update
    from rlbound.train.policy import TinyPolicy
    from rlbound.train.algorithms import TOKEN_LEVEL_ADVANTAGES, filter_keep, sequence_advantages

    torch.manual_seed(1)
    tok = CharTokenizer()
    policy = TinyPolicy(TinyLlama(SMALL), tok, "test")
    before = {r: _logprob(policy.model, tok, "Q: 1+1\nA: ", r) for r in ("2", "7")}
    algo_obj = get_algorithm(algo)
    prompt = tok.encode("Q: 1+1\nA: ", bos=True)
    responses = [tok.encode("2", eos=True), tok.encode("7", eos=True)]
    rewards = torch.tensor([1.0, 0.0])
    groups = torch.tensor([0, 0])
    correct = torch.tensor([True, False])
    if algo_obj.advantage in TOKEN_LEVEL_ADVANTAGES:
        adv, keep = torch.zeros(2), filter_keep(algo_obj.sample_filter, groups, correct)
    else:
        adv, keep = sequence_advantages(algo_obj, rewards, groups, correct)
    critic = None
    critic_opt = None
    if algo_obj.value_head:
        from rlbound.train.loop import _Critic

        critic = _Critic(policy)
        critic_opt = torch.optim.AdamW(critic.parameters(), lr=1e-3)
    optimizer = torch.optim.SGD(policy.parameters(), lr=0.5)
    config = TrainerConfig(algo=algo, lr=0.5, warmup=1, grad_clip=0)
    _update(policy, policy.frozen_copy(), critic, optimizer, critic_opt, algo_obj, config, 0, [prompt, prompt], responses,
            keep, adv, rewards)
    after = {r: _logprob(policy.model, tok, "Q: 1+1\nA: ", r) for r in ("2", "7")}
    if algo != "nsr":  # NSR only pushes the wrong response down
        assert after["2"] > before["2"]
    if algo != "psr":  # PSR only pulls the right one up
        assert after["7"] < before["7"]


def test_interrupted_run_resumes_to_the_same_model(small_model, tmp_path):
    task = arithmetic_task(n=4, difficulty=1)
    config = _config("grpo", steps=3)
    whole = train_rl(small_model, task, config, tmp_path / "whole")
    train_rl(small_model, task, config, tmp_path / "cut", stop_at=2)
    assert (tmp_path / "cut" / "checkpoint" / "state.pt").exists()
    resumed = train_rl(small_model, task, config, tmp_path / "cut")
    assert [m["reward"] for m in resumed.metrics] == [m["reward"] for m in whole.metrics]
    a, _ = load_model(whole.model_dir)
    b, _ = load_model(resumed.model_dir)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    with pytest.raises(RlboundError, match="other settings"):
        train_rl(small_model, task, _config("grpo", steps=3, lr=5e-4), tmp_path / "cut2", stop_at=1)
        train_rl(small_model, task, _config("grpo", steps=3, lr=1e-4), tmp_path / "cut2")


def test_cli_train_and_unknown_algorithm(small_model, tmp_path):
    cmd = [sys.executable, "-m", "rlbound.cli", "--quiet", "train", "--algo", "dr_grpo", "--model", str(small_model),
           "--task", "arithmetic", "-O", "n=2", "-O", "difficulty=1", "--out", str(tmp_path / "cli"),
           "--steps", "1", "--prompts-per-step", "2", "--group-size", "2", "--max-tokens", "8",
           "--reward", "random"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "trained 1 steps of dr_grpo" in done.stdout and (tmp_path / "cli" / "model" / "config.json").exists()
    cmd[cmd.index("dr_grpo")] = "grpo++"
    bad = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "grpo++" in bad.stderr and bad.stderr.strip().count("\n") == 0


@pytest.mark.parametrize("algo", ["grpo", "prerl", "ppo"])
def test_a_small_hugging_face_model_trains_on_cpu(algo, tmp_path):
    from tests.test_engine_hf import save_tiny_model

    model_dir = save_tiny_model(tmp_path / "hf")
    task = arithmetic_task(n=2, difficulty=1)
    result = train_rl(model_dir, task, _config(algo, steps=2), tmp_path / "run", engine="hf")
    assert len(result.metrics) == 2 and any(m["kept"] for m in result.metrics)
    from transformers import AutoModelForCausalLM

    before = AutoModelForCausalLM.from_pretrained(model_dir).state_dict()
    after = AutoModelForCausalLM.from_pretrained(result.model_dir).state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert (result.model_dir / "rlbound_training.json").exists()


def test_cli_incorrect_label_reward_takes_labels_from_a_base_run(small_model, tmp_path):
    from tests.stored_runs import write_run

    ids = [p.id for p in arithmetic_task(n=2, difficulty=1).problems]
    base = write_run(tmp_path / "base", "base", {pid: [("w", 3, False, "ok"), ("r", 3, True, "ok")] for pid in ids})
    cmd = [sys.executable, "-m", "rlbound.cli", "--quiet", "train", "--algo", "grpo", "--model", str(small_model),
           "--task", "arithmetic", "-O", "n=2", "-O", "difficulty=1", "--out", str(tmp_path / "spurious"),
           "--steps", "1", "--prompts-per-step", "2", "--group-size", "2", "--max-tokens", "8",
           "--reward", "incorrect_label"]
    refused = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "--labels-from" in refused.stderr
    assert refused.stderr.strip().count("\n") == 0
    done = subprocess.run(cmd + ["--labels-from", str(base)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "trained 1 steps of grpo" in done.stdout


@pytest.mark.parametrize("engine", ["tiny", "hf"])
def test_the_loss_rows_hold_the_context_the_rollout_was_sampled_from(engine, small_model, tmp_path):
    """The trainer's log-probs of a rollout equal the engine's own sampling log-probs (T = 1):
    the rows are the sampled context (one BOS) plus the response, never a second BOS."""
    from rlbound.engines.base import SamplingParams
    from rlbound.train.loop import training_rows
    from rlbound.train.policy import load_policy
    from rlbound.train.sequences import gather_logprobs

    if engine == "hf":
        from tests.test_engine_hf import save_tiny_model

        model = save_tiny_model(tmp_path / "hf")
    else:
        model = small_model
    policy = load_policy(model, engine=engine)
    prompts = ["Q: 3+4\nA: ", "Q: 12*3\nA: "]
    samples = policy.engine().generate(prompts, SamplingParams(temperature=1.0, max_tokens=8), [[3, 4], [5, 6]])
    flat = [(prompts[i], s) for i, group in enumerate(samples) for s in group]
    prompt_ids = [policy.encode_prompt(p) for p, _ in flat]
    ids, mask, attention = training_rows(policy, "prompt", prompt_ids, [s.token_ids for _, s in flat])
    assert all(ids[b, : len(p)].tolist() == p for b, p in enumerate(prompt_ids))  # the context as sampled
    with torch.no_grad():
        logp = gather_logprobs(policy.logits(ids, attention), ids, mask)
    for b, (_, sample) in enumerate(flat):
        got = logp[b][mask[b]].tolist()
        assert got == pytest.approx(sample.token_logprobs, abs=1e-4)
