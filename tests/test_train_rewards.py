"""Tests of rlbound.train.rewards: each reward on a hand-made batch of verdicts."""

from __future__ import annotations

import numpy as np
import pytest

from rlbound.errors import RlboundError
from rlbound.train.rewards import (
    REWARDS,
    RewardBatch,
    get_reward,
    majority_wrong_labels,
    make_reward,
)


def batch(step: int = 0) -> RewardBatch:
    return RewardBatch(
        problem_ids=["p1", "p1", "p1", "p2"],
        sample_idx=[0, 1, 2, 0],
        answers=["7", " 8 ", None, "x"],
        correct=[True, False, False, False],
        statuses=["ok", "ok", "no_answer", "timeout"],
        step=step,
    )


def test_registry_names_and_unknown_reward():
    assert set(REWARDS.names()) == {"correct", "random", "inverse", "format_only",
                                    "incorrect_label"}
    with pytest.raises(RlboundError, match="unknown reward 'corect'.*correct") as err:
        get_reward("corect")
    assert "\n" not in str(err.value)
    with pytest.raises(RlboundError, match="random reward"):
        get_reward("random", p=1.5)
    with pytest.raises(RlboundError, match="bad options"):
        get_reward("correct", p=0.5)


def test_correct_inverse_format():
    b = batch()
    assert get_reward("correct")(b).tolist() == [1.0, 0.0, 0.0, 0.0]
    assert get_reward("inverse")(b).tolist() == [0.0, 1.0, 1.0, 1.0]
    # format: an answer was extracted (timeout still had an answer), no_answer did not
    assert get_reward("format_only")(b).tolist() == [1.0, 1.0, 0.0, 1.0]
    assert get_reward("correct")(b).dtype == np.float64


def test_random_reward_is_reproducible_per_sample_and_has_rate_p():
    n = 4000
    big = RewardBatch([f"p{i % 50}" for i in range(n)], [i // 50 for i in range(n)],
                      [None] * n, [False] * n, ["no_answer"] * n)
    fn = get_reward("random", p=0.3, seed=7)
    r = fn(big)
    assert set(np.unique(r)) <= {0.0, 1.0}
    assert abs(r.mean() - 0.3) < 0.03
    np.testing.assert_array_equal(fn(big), r)  # reproducible
    # a sample's reward does not depend on its batch neighbours
    sub = RewardBatch(big.problem_ids[10:20][::-1], big.sample_idx[10:20][::-1],
                      [None] * 10, [False] * 10, ["ok"] * 10)
    np.testing.assert_array_equal(fn(sub), r[10:20][::-1])
    # another seed or another step draws afresh
    assert (get_reward("random", p=0.3, seed=8)(big) != r).mean() > 0.2
    moved = RewardBatch(big.problem_ids, big.sample_idx, big.answers, big.correct,
                        big.statuses, step=1)
    assert (fn(moved) != r).mean() > 0.2
    assert get_reward("random", p=0.0)(big).sum() == 0
    assert get_reward("random", p=1.0)(big).sum() == n


def test_majority_wrong_labels_and_incorrect_label_reward():
    answers = {
        "a": ["5", " 4", "4 ", "3", "3", None, None, None],  # 4 and 3 tie (2 each) -> "3"
        "b": ["9", "9", "2"],  # "9" correct, "2" the only wrong answer
        "c": ["1", "1"],  # all correct: no label
        "d": ["z", "y", "y"],  # "y" twice beats "z"
    }
    correct = {
        "a": [True, False, False, False, False, False, False, False],
        "b": [True, True, False],
        "c": [True, True],
        "d": [False, False, False],
    }
    labels = majority_wrong_labels(answers, correct)
    assert labels == {"a": "3", "b": "2", "d": "y"}
    answers["d"] = ["z", "z", "y"]
    assert majority_wrong_labels(answers, correct)["d"] == "z"  # frequency before order
    fn = get_reward("incorrect_label", labels={"p1": "8", "p2": "y"})
    assert fn(batch()).tolist() == [0.0, 1.0, 0.0, 0.0]  # " 8 " matches after normalising
    with pytest.raises(ValueError):
        majority_wrong_labels({"a": ["1"]}, {"a": [True, False]})


def test_make_reward_over_verdicts():
    from rlbound.verify import Verdict

    verdicts = [Verdict("7", True, "ok"), Verdict("8", False, "ok"),
                Verdict(None, False, "no_answer")]
    pids = ["p1", "p1", "p2"]
    assert make_reward("correct")(pids, verdicts).tolist() == [1.0, 0.0, 0.0]
    assert make_reward("format_only")(pids, verdicts).tolist() == [1.0, 1.0, 0.0]
    assert make_reward("incorrect_label", labels={"p1": "8"})(pids, verdicts).tolist() == [0, 1, 0]
    with pytest.raises(RlboundError, match="needs labels"):
        make_reward("incorrect_label")
    fn = make_reward("random", p=0.5, seed=3)
    with pytest.raises(ValueError, match="step"):
        fn(pids, verdicts)
    # default sample index = occurrence within the problem: (p1,0), (p1,1), (p2,0)
    explicit = get_reward("random", p=0.5, seed=3)(
        RewardBatch(pids, [0, 1, 0], ["7", "8", None], [True, False, False],
                    ["ok", "ok", "no_answer"], step=5))
    np.testing.assert_array_equal(fn(pids, verdicts, step=5), explicit)
