"""rlbound as verl's ``custom_reward_function``: loaded the way verl loads it, called the way
verl's reward managers call it.

verl is loaded through its own code where it can be: ``get_custom_reward_fn`` (verl's
trainer/ppo/reward.py) when ``import verl`` works; otherwise verl's ``load_extern_object``, the
function ``get_custom_reward_fn`` loads the file with, read from verl's installed source (verl's
package ``__init__`` needs ray and tensordict, and its config stack needs omegaconf, whose
antlr4 4.9 pin would replace the antlr4 4.13 that math-verify uses; ``scripts/install.sh``
installs verl with ``--no-deps``); without verl installed, the documented signature directly.
The results are checked against rlbound's own verdicts.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

import rlbound.integrations.verl as verl_reward
from rlbound.errors import RlboundError
from rlbound.train.rewards import make_reward
from rlbound.verify import STATUSES, verify_batch

MODULE = "pkg://rlbound.integrations.verl"


def verl_loader():
    """(how, load(path, name, reward_kwargs) -> callable) through verl's own loading code."""
    spec = importlib.util.find_spec("verl")
    if spec is None:
        return "signature", lambda path, name, kwargs: _bound(getattr(verl_reward, name), kwargs)
    try:
        from omegaconf import OmegaConf
        from verl.trainer.ppo.reward import get_custom_reward_fn
    except Exception:  # noqa: BLE001 - verl installed without its heavy dependencies
        source = Path(spec.submodule_search_locations[0]) / "utils" / "import_utils.py"
        loader_spec = importlib.util.spec_from_file_location("verl_import_utils_for_test", source)
        module = importlib.util.module_from_spec(loader_spec)
        loader_spec.loader.exec_module(module)
        return "load_extern_object", lambda path, name, kwargs: _bound(module.load_extern_object(path, name), kwargs)

    def load(path, name, kwargs):
        config = OmegaConf.create({"reward": {"custom_reward_function": {
            "path": path, "name": name, "reward_kwargs": kwargs}}})
        return get_custom_reward_fn(config)
    return "get_custom_reward_fn", load


def _bound(fn, kwargs):
    """What verl's get_custom_reward_fn returns: the function with reward_kwargs merged in."""
    return lambda *args, **call: fn(*args, **{**call, **kwargs})


@pytest.fixture(scope="module")
def load():
    how, fn = verl_loader()
    print(f"verl reward loading through: {how}")
    return fn


SOLUTIONS = ["So the total is \\boxed{42}.", "The answer is \\boxed{41}.", "I am not sure."]


def test_compute_score_as_the_naive_reward_manager_calls_it(load):
    score = load(MODULE, "compute_score", {})
    results = [score(data_source="openai/gsm8k", solution_str=s, ground_truth="42", extra_info={"index": i})
               for i, s in enumerate(SOLUTIONS)]
    verdicts = verify_batch("math", ["42"] * 3, SOLUTIONS)
    for result, verdict in zip(results, verdicts):
        assert result["score"] == result["acc"] == float(verdict.correct)
        assert result["pred"] == (verdict.answer or "") and result["status"] == verdict.status
        assert {k for k in result if k.startswith("status/")} == {f"status/{s}" for s in STATUSES}
        assert result[f"status/{verdict.status}"] == 1.0 and sum(result[f"status/{s}"] for s in STATUSES) == 1.0
    assert [r["score"] for r in results] == [1.0, 0.0, 0.0]
    assert results[2]["status"] == "no_answer"
    # the keywords verl adds for reward-model routing are accepted and ignored
    routed = score(data_source="m", solution_str=SOLUTIONS[0], ground_truth="42", extra_info={},
                   reward_router_address="127.0.0.1:1", reward_model_tokenizer=None)
    assert routed["score"] == 1.0


def test_verifier_choice_and_reward_kwargs(load):
    assert verl_reward.verifier_for("lighteval/MATH") == "math"
    assert verl_reward.verifier_for("exact") == "exact"
    assert verl_reward.verifier_for("humaneval") == "code"
    assert verl_reward.verifier_for("x", {"verifier": "exact"}) == "exact"
    assert verl_reward.verifier_for("x", {"verifier": "exact"}, verifier="math") == "math"
    text = "The answer is \\boxed{Paris}."
    as_exact = load(MODULE, "compute_score", {})("x", text, "paris", {"verifier": "exact"})
    assert as_exact["score"] == float(verify_batch("exact", ["paris"], [text])[0].correct)
    relaxed = load(MODULE, "compute_score", {"verifier": "exact",
                                             "verifier_options": {"case_sensitive": False}})
    assert relaxed("x", text, "paris", {"verifier": "math"})["score"] == 1.0
    with pytest.raises(RlboundError, match="has no option"):
        load(MODULE, "compute_score", {"verifier": "exact", "verifier_options": {"bogus": 1}})("x", text, "p")


def test_compute_score_batch_as_the_batch_reward_manager_calls_it(load):
    score = load(MODULE, "compute_score_batch", {})
    sources = ["gsm8k"] * 3 + ["exact"]
    truths = ["42", "42", "42", "7"]
    texts = SOLUTIONS + ["#### 7"]
    results = score(data_sources=sources, solution_strs=texts, ground_truths=truths,
                    extra_infos=[{} for _ in texts])
    expected = verify_batch("math", truths[:3], texts[:3]) + verify_batch("exact", truths[3:], texts[3:])
    assert [r["score"] for r in results] == [float(v.correct) for v in expected] == [1.0, 0.0, 0.0, 1.0]
    with pytest.raises(RlboundError, match="must match"):
        score(data_sources=sources[:2], solution_strs=texts, ground_truths=truths)


def test_spurious_rewards_through_verl(load):
    infos = [{"index": 0, "incorrect_label": "41"}] * 3
    inverse = load(MODULE, "compute_score_batch", {"reward": "inverse"})
    got = inverse(data_sources=["m"] * 3, solution_strs=SOLUTIONS, ground_truths=["42"] * 3, extra_infos=infos)
    assert [r["score"] for r in got] == [0.0, 1.0, 1.0] and [r["acc"] for r in got] == [1.0, 0.0, 0.0]
    label = load(MODULE, "compute_score_batch", {"reward": "incorrect_label"})
    got = label(data_sources=["m"] * 3, solution_strs=SOLUTIONS, ground_truths=["42"] * 3, extra_infos=infos)
    assert [r["score"] for r in got] == [0.0, 1.0, 0.0]
    fmt = load(MODULE, "compute_score", {"reward": "format_only"})
    assert [fmt("m", s, "42", {"index": 0})["score"] for s in SOLUTIONS] == [1.0, 1.0, 0.0]
    coins = load(MODULE, "compute_score", {"reward": "random", "seed": 12345})
    drawn = [coins("m", SOLUTIONS[0], "42", {"index": 9})["score"] for _ in range(16)]
    expected = make_reward("random", seed=12345)(["m:9"] * 16, verify_batch("math", ["42"] * 16, [SOLUTIONS[0]] * 16),
                                                 step=0, sample_idx=list(range(16)))
    assert drawn == list(expected) and 0 < sum(drawn) < 16  # a fresh coin per sample


def test_verl_rows_feed_compute_score(load):
    from rlbound.tasks.synthetic import arithmetic_task

    task = arithmetic_task(n=3, seed=0, difficulty=1)
    rows = verl_reward.verl_rows(task)
    assert [r["extra_info"]["problem_id"] for r in rows] == [p.id for p in task.problems]
    first = rows[0]
    assert first["data_source"] == "arithmetic" and first["prompt"][0]["role"] == "user"
    assert first["prompt"][0]["content"].startswith(task.problems[0].prompt + "\n")
    score = load(MODULE, "compute_score", {})
    answer = task.problems[0].reference
    right = score(first["data_source"], f"#### {answer}", first["reward_model"]["ground_truth"], first["extra_info"])
    wrong = score(first["data_source"], f"#### {answer}1", first["reward_model"]["ground_truth"], first["extra_info"])
    assert (right["score"], wrong["score"]) == (1.0, 0.0)  # graded by the task's own verifier (exact)
    with pytest.raises(RlboundError, match="chat template"):
        verl_reward.verl_rows(task, template="plain")


def test_file_path_form(load):
    if importlib.util.find_spec("verl") is None:
        pytest.skip("verl is not installed: its loader cannot be exercised")
    score = load(verl_reward.__file__, "compute_score", {})
    assert score("m", SOLUTIONS[0], "42")["score"] == 1.0
