"""rlbound inside TRL: reward functions for GRPOTrainer, and the PreRL family as a GRPOTrainer.

Real TRL on CPU (nothing mocked): the tiny arithmetic model of the session fixture, exported as a
Hugging Face Llama, trains 2 steps per run. The trainer's logged rewards are checked against
rlbound's verdicts recomputed on the completions TRL logged; the PreRL trainer's log-probs
against rlbound's own trainer path (policy_inputs + HFPolicy.logits + gather_logprobs) on the
same weights and responses.
"""

from __future__ import annotations

import pytest

pytest.importorskip("trl")

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback, TrainerState  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

from rlbound.errors import RlboundError  # noqa: E402
from rlbound.integrations.trl import (  # noqa: E402
    completion_text,
    exact_reward,
    format_only_reward,
    incorrect_label_reward,
    inverse_reward,
    math_reward,
    qa_reward,
    random_reward,
    task_rows,
)
from rlbound.integrations.trl_prerl import PreRLConfig, PreRLTrainer  # noqa: E402
from rlbound.tasks.base import Problem, Task  # noqa: E402
from rlbound.tasks.synthetic import arithmetic_task  # noqa: E402
from rlbound.train.algorithms import ALGORITHMS, policy_loss  # noqa: E402
from rlbound.train.policy import load_policy  # noqa: E402
from rlbound.train.rewards import make_reward  # noqa: E402
from rlbound.train.sequences import gather_logprobs, policy_inputs  # noqa: E402
from rlbound.verify import VERIFIERS, VerifierPool, verify_batch  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def rows():
    rows = task_rows(arithmetic_task(n=4, seed=0, difficulty=1))
    assert len({r["prompt"] for r in rows}) == len(rows)  # a prompt names its group below
    return rows


def config(tmp_path, cls=GRPOConfig, **options):
    # bf16=False: TRL's default (bf16 autocast, also on CPU) moves log-probs by ~0.09 here
    base = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=8, num_generations=4,
                max_completion_length=16, max_steps=2, logging_steps=1, report_to="none", use_cpu=True,
                bf16=False, learning_rate=1e-3, temperature=1.0, save_strategy="no", seed=0,
                disable_tqdm=True)
    return cls(**{**base, **options})


def load(hf_dir):
    return AutoModelForCausalLM.from_pretrained(hf_dir), AutoTokenizer.from_pretrained(hf_dir)


class BatchLog(TrainerCallback):
    """At each step's log: the completions, prompts and per-sample rewards TRL recorded."""

    def __init__(self, name: str):
        self.name, self.trainer, self.steps = name, None, []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or "train_runtime" in logs:
            return
        t = self.trainer
        self.steps.append({"prompts": list(t._logs["prompt"]), "completions": list(t._logs["completion"]),
                           "rewards": list(t._logs["rewards"][self.name]), "logs": dict(logs)})


@pytest.mark.slow
def test_grpo_trainer_logs_rlbound_verdicts(exported_arithmetic_model, rows, tmp_path):
    model, tokenizer = load(exported_arithmetic_model["hf"])
    reward = exact_reward(answer_field="answer")
    assert reward.__name__ == "rlbound_exact"
    log = BatchLog(reward.__name__)
    trainer = GRPOTrainer(model=model, processing_class=tokenizer, reward_funcs=[reward],
                          args=config(tmp_path), train_dataset=Dataset.from_list(rows), callbacks=[log])
    log.trainer = trainer
    trainer.train()

    assert len(log.steps) == 2
    answer_of = {r["prompt"]: r["answer"] for r in rows}
    every = []
    for step in log.steps:
        verdicts = verify_batch("exact", [answer_of[p] for p in step["prompts"]], step["completions"])
        expected = [float(v.correct) for v in verdicts]
        assert step["rewards"] == expected
        logs, n = step["logs"], len(verdicts)
        assert logs["rewards/rlbound_exact/mean"] == pytest.approx(sum(expected) / n)
        assert logs["verdicts/rlbound_exact/correct"] == pytest.approx(sum(expected) / n)
        for status in ("ok", "no_answer", "timeout", "error"):
            share = sum(v.status == status for v in verdicts) / n
            assert logs[f"verdicts/rlbound_exact/{status}"] == pytest.approx(share)
        every += expected
    assert 0 < sum(every) < len(every), "the model should solve some problems and miss others"
    assert sum(reward.status_counts.values()) == len(every)


def test_reward_signature_conversational_and_spurious(rows):
    prompts = [[{"role": "user", "content": r["prompt"]}] for r in rows]
    texts = ["4-4=0\n#### 0", "6*7=41\n#### 41", "no answer here", "x\n#### 7"]
    completions = [[{"role": "assistant", "content": t}] for t in texts]
    completions[1] = [{"role": "assistant", "content": [{"type": "text", "text": texts[1]}]}]
    columns = {k: [r[k] for r in rows] for k in ("answer", "problem_id")}
    state = TrainerState(global_step=3)
    metrics, extra = {}, {}

    true = exact_reward()
    got = true(prompts=prompts, completions=completions, completion_ids=None, trainer_state=state,
               log_metric=lambda k, v: metrics.setdefault(k, v),
               log_extra=lambda k, v: extra.setdefault(k, v), **columns)
    verdicts = verify_batch("exact", columns["answer"], texts)
    assert got == [float(v.correct) for v in verdicts]
    assert [completion_text(c) for c in completions] == texts
    assert metrics["verdicts/rlbound_exact/no_answer"] == pytest.approx(
        sum(v.status == "no_answer" for v in verdicts) / 4)
    assert extra["rlbound_exact/status"] == [v.status for v in verdicts]

    ids = columns["problem_id"]
    for factory, name in ((inverse_reward, "inverse"), (format_only_reward, "format_only"),
                          (lambda v: random_reward(v, p=0.5, seed=7), "random")):
        fn = factory("exact")
        assert fn.__name__ == f"rlbound_exact_{name}"
        expected = make_reward(name, p=0.5, seed=7)(ids, verdicts, step=3)
        assert fn(prompts=prompts, completions=completions, trainer_state=state, **columns) == list(expected)
    coins = random_reward("exact", p=0.5, seed=7)
    at = [coins(prompts=prompts, completions=completions, trainer_state=TrainerState(global_step=s),
                **columns) for s in range(8)]
    assert len({tuple(a) for a in at}) > 1  # a fresh draw each step

    wrong = ["1", "41", "5", "7"]
    by_column = incorrect_label_reward("exact", label_field="wrong")
    by_mapping = incorrect_label_reward("exact", labels=dict(zip(ids, wrong)))
    for fn in (by_column, by_mapping):
        assert fn(prompts=prompts, completions=completions, wrong=wrong, **columns) == [0.0, 1.0, 0.0, 1.0]


@pytest.mark.slow
def test_math_reward_grades_in_the_pool_with_hard_kill_and_cache():
    texts = [r"so \boxed{42}", r"\boxed{9^{9^{9}}}", r"\boxed{41}", r"so \boxed{42}"]  # the 2nd hangs sympy
    metrics = {}
    with VerifierPool(workers=2) as pool:
        fn = math_reward(timeout_s=1.0, pool=pool)
        got = fn(prompts=["q"] * 4, completions=texts, answer=["42"] * 4, log_metric=metrics.__setitem__)
        assert got == [1.0, 0.0, 0.0, 1.0]
        assert [v.status for v in fn.last_verdicts] == ["ok", "timeout", "ok", "ok"]
        assert metrics["verdicts/rlbound_math/timeout"] == 0.25 and metrics["verdicts/rlbound_math/ok"] == 0.75
        assert pool.kills == 1
        checks = fn.cache.checks
        assert fn(prompts=["q"] * 2, completions=[texts[2], texts[0]], answer=["42"] * 2) == [0.0, 1.0]
        assert fn.cache.checks == checks  # both answers were cached: no check ran


def test_reward_errors_are_one_line(rows):
    with pytest.raises(RlboundError, match="no column 'solution'") as err:
        math_reward(answer_field="solution")(prompts=["q"], completions=["a"], answer=["1"])
    assert "\n" not in str(err.value)
    with pytest.raises(RlboundError, match="needs labels"):
        incorrect_label_reward("exact")
    with pytest.raises(RlboundError, match="unknown reward"):
        exact_reward(reward="corect")


@pytest.mark.skipif("qa" not in VERIFIERS, reason="the qa verifier has not landed")
def test_qa_reward_grades_through_the_registry():
    fn = qa_reward()
    texts = ["The answer is Paris.", "I don't know."]
    got = fn(prompts=["capital of France?"] * 2, completions=texts, answer=["Paris", "Paris"])
    assert got == [float(v.correct) for v in verify_batch("qa", ["Paris", "Paris"], texts)]
    assert got[0] == 1.0 and got[1] == 0.0


def test_task_rows_render_prompts_as_rlbound_sample_does():
    task = Task("t", (Problem("p1", "2+2", "4"),), verifier="exact", template="plain")
    assert task_rows(task) == [{"prompt": "Q: 2+2\nA: ", "answer": "4", "problem_id": "p1"}]
    chat = task_rows(task, template="chat")[0]["prompt"]
    assert chat[0]["role"] == "user" and chat[0]["content"].startswith("2+2\n")


# --- PreRL ------------------------------------------------------------------------------------


class RecordingPreRLTrainer(PreRLTrainer):
    """Records each loss computation: weights, batch, the log-probs the loss used, the loss."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.records = []

    def _compute_loss(self, model, inputs):
        policy = self.accelerator.unwrap_model(model)
        record = {"weights": {k: v.detach().clone() for k, v in policy.state_dict().items()},
                  "prompt_ids": inputs["prompt_ids"].clone(), "prompt_mask": inputs["prompt_mask"].clone(),
                  "completion_ids": inputs["completion_ids"].clone(),
                  "completion_mask": inputs["completion_mask"].clone(),
                  "advantages": inputs["advantages"].clone(), "algo": self.algorithm.name,
                  "loss_type": self.loss_type}
        if self.ref_model is not None:
            record["ref_is_policy"] = all(torch.equal(a, b) for a, b in
                                          zip(policy.state_dict().values(), self.ref_model.state_dict().values()))
        self._record = record
        loss = super()._compute_loss(model, inputs)
        record["loss"] = float(loss.detach())
        self.records.append(record)
        return loss

    def _get_per_token_logps_and_entropies(self, *args, compute_entropy=False, **kwargs):
        out = super()._get_per_token_logps_and_entropies(*args, compute_entropy=compute_entropy, **kwargs)
        if compute_entropy:  # the call inside _compute_loss
            self._record["logps"] = out[0].detach().clone()
        return out


def run_prerl(hf_dir, rows, tmp_path, **options):
    model, tokenizer = load(hf_dir)
    trainer = RecordingPreRLTrainer(model=model, processing_class=tokenizer, reward_funcs=[exact_reward()],
                                    args=config(tmp_path, PreRLConfig, **options),
                                    train_dataset=Dataset.from_list(rows))
    trainer.train()
    return trainer


def rlbound_logprobs(policy, record):
    """rlbound's trainer path on the record's weights and responses: (logp [B, C], mask [B, C])."""
    policy.model.load_state_dict(record["weights"])
    ids_c, keep = record["completion_ids"], record["completion_mask"].bool()
    responses = [ids_c[b][keep[b]].tolist() for b in range(len(ids_c))]
    ids, mask, _ = policy_inputs([[]] * len(responses), responses, "response_only", policy.bos_id, policy.pad_id)
    attention = (torch.arange(ids.shape[1])[None, :] < (mask.sum(1) + 1)[:, None]).long()
    with torch.no_grad():
        logp = gather_logprobs(policy.logits(ids, attention), ids, mask)
    out = torch.zeros(ids_c.shape)
    for b, r in enumerate(responses):
        out[b, : len(r)] = logp[b][mask[b]]
    return out, keep


@pytest.mark.slow
def test_prerl_logprobs_equal_rlbound_trainer_path(exported_arithmetic_model, rows, tmp_path):
    hf_dir = exported_arithmetic_model["hf"]
    trainer = run_prerl(hf_dir, rows, tmp_path, algo="prerl")
    assert len(trainer.records) == 2 and trainer.state.global_step == 2
    assert [h["prerl/response_only"] for h in trainer.state.log_history[:2]] == [1.0, 1.0]
    policy = load_policy(hf_dir, "hf")
    for record in trainer.records:
        assert record["algo"] == "prerl" and record["loss_type"] == "dapo"
        expected, keep = rlbound_logprobs(policy, record)
        assert keep.sum() > 0
        assert torch.allclose(record["logps"] * keep, expected, atol=1e-5)
    assert not torch.equal(trainer.records[0]["weights"]["lm_head.weight"],
                           trainer.records[1]["weights"]["lm_head.weight"])  # it trained


@pytest.mark.slow
def test_nsr_prerl_keeps_wrong_samples_with_rlbound_loss(exported_arithmetic_model, rows, tmp_path):
    hf_dir = exported_arithmetic_model["hf"]
    trainer = run_prerl(hf_dir, rows, tmp_path, algo="nsr_prerl")
    tokenizer = trainer.processing_class
    answer_of = {r["prompt"]: r["answer"] for r in rows}
    policy = load_policy(hf_dir, "hf")
    kept_any = False
    for record in trainer.records:
        prompts = tokenizer.batch_decode([p[m.bool()] for p, m in zip(record["prompt_ids"], record["prompt_mask"])],
                                         skip_special_tokens=True)
        # the completions TRL decoded for the reward, before the filter zeroed dropped rows' masks
        texts = tokenizer.batch_decode(record["completion_ids"], skip_special_tokens=True)
        reward = torch.tensor([float(v.correct) for v in verify_batch(
            "exact", [answer_of[p] for p in prompts], texts)])
        kept = record["completion_mask"].sum(1) > 0
        assert torch.equal(kept, reward == 0)  # NSR: the wrong samples, and only them
        group_mean = {p: reward[[q == p for q in prompts]].mean() for p in set(prompts)}
        expected_adv = torch.where(kept, torch.stack([0 - group_mean[p] for p in prompts]), torch.zeros(len(prompts)))
        assert torch.allclose(record["advantages"], expected_adv, atol=1e-6)
        if kept.any():
            kept_any = True
            logp, keep = rlbound_logprobs(policy, record)
            mask = keep.float()
            loss, _ = policy_loss(ALGORITHMS["nsr_prerl"], logp, logp, record["advantages"][:, None] * mask, mask)
            assert record["loss"] == pytest.approx(float(loss), abs=1e-5)
    assert kept_any


@pytest.mark.slow
def test_dsrl_switches_space_and_resyncs_reference(exported_arithmetic_model, rows, tmp_path):
    trainer = run_prerl(exported_arithmetic_model["hf"], rows, tmp_path, algo="dsrl", dsrl_switch=1, beta=0.04)
    first, second = trainer.records
    assert (first["algo"], first["loss_type"]) == ("dsrl/nsr_prerl", "dapo")
    assert (second["algo"], second["loss_type"]) == ("dsrl/grpo", "grpo")
    assert [h["prerl/response_only"] for h in trainer.state.log_history[:2]] == [1.0, 0.0]
    assert not torch.equal(first["weights"]["lm_head.weight"], second["weights"]["lm_head.weight"])
    assert second["ref_is_policy"]  # re-synced at the switch, after the policy moved


def test_prerl_config_errors(tmp_path):
    with pytest.raises(RlboundError, match="algo must be one of"):
        config(tmp_path, PreRLConfig, algo="grpo")
    with pytest.raises(RlboundError, match="dsrl_switch"):
        config(tmp_path, PreRLConfig, algo="dsrl", dsrl_switch=-1)
