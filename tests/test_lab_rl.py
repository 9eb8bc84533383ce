"""The lab's RL knobs: checked before any stage, mapped onto the trainer; incorrect labels from a run."""

from __future__ import annotations

from dataclasses import replace

import pytest

from rlbound.errors import RlboundError
from rlbound.lab.config import preset
from rlbound.lab.pipeline import check_rl_config, rl_tasks, trainer_config
from rlbound.train.algorithms import ALGORITHMS, SCHEDULES
from rlbound.train.labels import labels_from_run
from tests.stored_runs import write_run


def with_rl(**values):
    config = preset("default")
    return replace(config, rl=replace(config.rl, **values))


def test_trainer_config_takes_the_rl_knobs_then_the_trainer_table():
    config = with_rl(lr=5e-4, steps=7, group_size=4, trainer={"kl_coef": 0.02, "updates_per_batch": 2})
    trainer = trainer_config(config, "dapo")
    assert (trainer.algo, trainer.lr, trainer.steps, trainer.group_size) == ("dapo", 5e-4, 7, 4)
    assert (trainer.kl_coef, trainer.updates_per_batch) == (0.02, 2)
    assert trainer.temperature == config.sampling.temperature
    assert trainer_config(preset("default"), "grpo").kl_coef is None  # the algorithm's own default


@pytest.mark.parametrize("values, message", [
    ({"algorithms": ["grpo", "sft"]}, "unknown algorithm 'sft'"),
    ({"algorithms": ["nsr", "nsr"]}, "listed twice"),
    ({"families": ["chess"]}, "rl.families"),
    ({"families": []}, "rl.families"),
    ({"reward": "vibes"}, "unknown reward 'vibes'"),
    ({"check_problems": 500}, "cannot exceed rl.problems"),
    ({"problems": 0}, "rl.problems must be >= 1"),
    ({"trainer": {"lr": 1.0}}, "set rl.lr itself"),
    ({"trainer": {"momentum": 0.9}}, "unknown trainer knob 'momentum'"),
    ({"steps": 0}, "steps must be >= 1"),
])
def test_impossible_rl_knobs_are_one_line_errors(values, message):
    with pytest.raises(RlboundError, match=message):
        check_rl_config(with_rl(**values))


def test_the_presets_are_valid_and_full_trains_every_algorithm():
    for name in ("quick", "default", "full"):
        check_rl_config(preset(name))
    assert set(preset("full").rl.algorithms) == set(ALGORITHMS) | set(SCHEDULES)
    default = preset("default").rl.algorithms
    assert "grpo" in default and ({"nsr", "dsrl"} & set(default))


def test_rl_problems_are_fresh_training_problems_of_the_chosen_families():
    config = with_rl(families=["programs"], problems=5)
    (task,) = rl_tasks(config)
    assert task.name == "programs" and len(task.problems) == 5
    assert len(rl_tasks(config, 2)[0].problems) == 2
    default = preset("default")
    ids = {p.id for t in rl_tasks(default) for p in t.problems}
    from rlbound.lab.corpus import DISTILL_OFFSET, SELF_TRAIN_OFFSET, lab_task

    others = {p.id for f in ("countdown", "programs") for offset in (0, DISTILL_OFFSET, SELF_TRAIN_OFFSET)
              for p in lab_task(f, default.world, default.rl.problems, split="train", offset=offset).problems}
    tests = {p.id for f in ("countdown", "programs") for p in lab_task(f, default.world, 30).problems}
    assert not ids & others and not ids & tests


def test_labels_from_run_take_each_problems_most_frequent_wrong_answer(tmp_path):
    sample = lambda answer, correct: (str(answer), 1, correct, "ok", answer)  # noqa: E731
    write_run(tmp_path / "run", "base", {
        "a": [sample("5", True), sample("3", False), sample("3", False), sample("4", False)],
        "b": [sample("7", True), sample("7", True), sample(None, False), sample("7", True)],
    })
    assert labels_from_run(tmp_path / "run") == {"a": "3"}  # b has no wrong extracted answer

    write_run(tmp_path / "right", "base", {"b": [sample("7", True)]})
    with pytest.raises(RlboundError, match="no sample has a wrong extracted answer"):
        labels_from_run(tmp_path / "right")


def test_a_lab_runs_task_is_rebuilt_by_name_from_its_recorded_options():
    from rlbound.lab.corpus import lab_task
    from rlbound.scoring import task_from_run
    from rlbound.tasks.base import load_task

    world = replace(preset("default").world, tree_share=0.6, seed=3)
    for family in ("countdown", "programs"):
        task = lab_task(family, world, 6, split="train", offset=7)
        meta = {"config": {"task": {"name": family, "options": task.options, "problems": 6}}}
        rebuilt = task_from_run(meta, "lab-run")
        assert [p.id for p in rebuilt.problems] == [p.id for p in task.problems]
        assert rebuilt.verifier == task.verifier and rebuilt.name == family
        assert [p.reference for p in load_task(family, **task.options).problems] == [p.reference for p in task.problems]
    with pytest.raises(RlboundError, match="lab_world is not a lab world configuration"):
        load_task("countdown", lab_world={"planets": 3}, n=2)
