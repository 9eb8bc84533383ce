"""Seeds, imitation-then-RL and the learning-rate sweep in the lab; the seed comparison and answer
agreement on hand-built numbers; the RL knobs' one-line errors."""

from __future__ import annotations


import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from rlbound.analysis.agreement import agreement_of_answers, answer_agreement_run, has_many_correct_answers
from rlbound.analysis.samples import RunSamples
from rlbound.analysis.seeds import compare_groups
from rlbound.errors import RlboundError
from rlbound.lab.config import apply_overrides, config_toml, load_config, preset
from rlbound.lab.pipeline import RLModel, check_rl_config, lr_text, rl_models, trainer_config

REPO = Path(__file__).resolve().parents[1]
FAMILIES = ("countdown", "programs")

# The quick preset made smaller still: a 2-layer model pretrained for 300 steps on the easiest
# problems (it solves some programs, so distillation has correct samples to learn from), 3 test
# problems per family at n = 4, and RL runs of 2 steps. The random reward makes every seed's
# updates non-zero whatever the rollouts score, so two seeds give two different models.
TINY = {
    "world": {"test_problems": 3, "programs_difficulties": [1], "countdown_difficulty": 1},
    "base_corpus": {"problems": 300, "traces_per_problem": 2},
    "teacher_corpus": {"problems": 300, "traces_per_problem": 2},
    "model": {"d_model": 64, "n_layers": 2, "n_heads": 2, "d_ff": 128},
    "pretrain": {"steps": 300, "batch_size": 32, "warmup": 5, "checkpoint_every": 1000},
    "teacher_pretrain": {"steps": 5, "batch_size": 16, "warmup": 1, "checkpoint_every": 1000},
    "distill": {"problems": 20, "samples": 4, "steps": 4, "batch_size": 8, "warmup": 1},
    "self_train": {"enabled": False},
    "rl": {"algorithms": ["grpo"], "families": ["programs"], "problems": 8, "steps": 2, "prompts_per_step": 4,
           "group_size": 2, "max_tokens": 60, "check_problems": 0, "reward": "random",
           "seeds": 2, "start": ["base", "distilled"]},
    "sampling": {"n": 4, "max_tokens": 60},
}
RL_LABELS = ["grpo", "grpo@s1", "distilled+grpo", "distilled+grpo@s1"]
MODELS = ["base", "teacher", "distilled", *RL_LABELS]
TINY_LR = preset("quick").rl.lr


@pytest.fixture(scope="module")
def tiny_lab(tmp_path_factory, one_torch_thread):
    from rlbound.lab.pipeline import run_lab
    from rlbound.progress import set_quiet

    set_quiet(True)
    try:
        out = tmp_path_factory.mktemp("lab")
        config = apply_overrides(preset("quick"), TINY, "test")
        result = run_lab(out, config, "quick")
        again = run_lab(out, config, "quick")  # every stage, seeds and starts included, from the cache
    finally:
        set_quiet(False)
    return out, result, again


def with_rl(**values):
    config = preset("default")
    return replace(config, rl=replace(config.rl, **values))


# ------------------------------------------------------------------------------ labels and knobs


def test_rl_models_cover_every_start_algorithm_seed_and_sweep_rate():
    config = with_rl(algorithms=["grpo", "nsr"], start=["base", "distilled"], seeds=2, lr=1e-4,
                     lr_sweep={"nsr": [1e-5, 1e-4], "w_reinforce": [3e-5]})
    assert [m.label for m in rl_models(config)] == [
        "grpo", "grpo@s1", "nsr", "nsr@s1", "distilled+grpo", "distilled+grpo@s1", "distilled+nsr",
        "distilled+nsr@s1", "nsr@lr1e-05", "w_reinforce@lr3e-05"]  # nsr at rl.lr is "nsr" itself
    assert RLModel("nsr", "distilled", 2, 1.5e-4).label == "distilled+nsr@lr1.5e-04@s2"
    assert RLModel("nsr", "distilled", 2, 1.5e-4).group == "distilled+nsr@lr1.5e-04"
    assert [lr_text(x) for x in (3e-5, 1e-4, 0.5)] == ["3e-05", "1e-04", "5e-01"]
    # seed 0 from the base model trains with exactly the knobs it always did: old lab directories resume
    default = preset("default")
    assert trainer_config(default, "grpo", 0, None) == trainer_config(default, "grpo")
    from rlbound.lab.pipeline import _trainer_spec

    float32 = replace(default, model=replace(default.model, dtype="float32"))
    old_keys = set(trainer_config(float32, "grpo").as_dict()) - {"dtype"}  # float32 was all there was
    assert set(_trainer_spec(float32, RLModel("grpo"))) == old_keys
    assert _trainer_spec(replace(default, model=replace(default.model, dtype="bfloat16")),
                         RLModel("grpo"))["dtype"] == "bfloat16"
    seeded = trainer_config(with_rl(seed=5), "grpo", 2, 3e-5)
    assert (seeded.seed, seeded.lr) == (7, 3e-5)


def test_the_full_preset_trains_three_seeds_and_sweeps_nsr_and_w_reinforce():
    full = preset("full")
    assert full.rl.seeds == 3 and preset("default").rl.seeds == 1 and preset("default").rl.start == ["base"]
    sweep = [m.label for m in rl_models(full) if m.lr is not None]
    assert sweep == ["nsr@lr1e-05", "nsr@lr3e-05", "w_reinforce@lr1e-05", "w_reinforce@lr3e-05"]
    assert sum(m.lr is None for m in rl_models(full)) == 3 * len(full.rl.algorithms)


def test_the_report_compares_the_large_k_studys_algorithms_among_themselves():
    from rlbound.lab.pipeline import LARGE_K_ALGORITHMS, _seed_groups

    full = preset("full")
    sets = _seed_groups(full, rl_models(full))
    every = sets["every RL algorithm"]
    assert len(every) == 14 and all(len(labels) == 3 for labels in every.values())  # the sweep is left out
    (name,) = [n for n in sets if n.startswith("the large-k study's")]
    assert sorted(sets[name]) == sorted(LARGE_K_ALGORITHMS) and sets[name]["grpo"] == ["grpo", "grpo@s1", "grpo@s2"]
    default = preset("default")  # GRPO and DSRL: one large-k algorithm, no such set
    assert list(_seed_groups(default, rl_models(default))) == ["every RL algorithm"]
    only_large_k = with_rl(algorithms=["grpo", "ppo"], seeds=2)  # the set would repeat "every"
    assert list(_seed_groups(only_large_k, rl_models(only_large_k))) == ["every RL algorithm"]


def test_presets_write_toml_that_reads_back(tmp_path):
    for name in ("full", "default"):
        path = tmp_path / f"{name}.toml"
        path.write_text(config_toml(preset(name)))
        assert load_config("quick", path) == preset(name)


def test_the_covered_regime_combines_with_the_full_preset():
    covered = load_config("full", REPO / "examples" / "lab" / "covered.toml")
    full = preset("full")
    assert covered.base_corpus.strategy_shares["search"] == 0.3 and covered.base_corpus.solves["direct"] == ["short", "long"]
    assert covered.base_corpus.solves["chain"] == ["chain"]  # keys the file leaves out keep the preset's
    assert (covered.base_corpus.problems, covered.pretrain.steps) == (full.base_corpus.problems, full.pretrain.steps)
    assert covered.rl == full.rl and covered.world == full.world
    check_rl_config(covered)
    imitation = load_config("default", REPO / "examples" / "lab" / "imitation-then-rl.toml")
    assert imitation.rl.start == ["base", "distilled"]
    check_rl_config(imitation)


@pytest.mark.parametrize("values, message", [
    ({"start": ["teacher"]}, "rl.start: unknown start model 'teacher'; choose from base, distilled"),
    ({"start": []}, "rl.start is empty"),
    ({"start": ["base", "base"]}, "rl.start: a start model is listed twice"),
    ({"seeds": 0}, "rl.seeds must be >= 1"),
    ({"lr_sweep": {"sft": [1e-5]}}, "rl.lr_sweep: unknown algorithm 'sft'"),
    ({"lr_sweep": {"nsr": [0.0]}}, "rl.lr_sweep.nsr must be a list of learning rates > 0"),
    ({"lr_sweep": {"nsr": "1e-5"}}, "rl.lr_sweep.nsr must be a list of learning rates > 0"),
    ({"lr_sweep": {"nsr": [True]}}, "rl.lr_sweep.nsr must be a list of learning rates > 0"),
    ({"lr_sweep": {"nsr": [1e-5, 1e-5]}}, "rl.lr_sweep.nsr: a learning rate is listed twice"),
])
def test_impossible_seed_start_and_sweep_knobs_are_one_line_errors(values, message):
    with pytest.raises(RlboundError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        check_rl_config(with_rl(**values))
    assert "\n" not in str(err.value)


def test_distilled_start_needs_distillation():
    config = with_rl(start=["base", "distilled"])
    check_rl_config(config)
    off = replace(config, distill=replace(config.distill, enabled=False))
    with pytest.raises(RlboundError, match=r"rl.start: 'distilled' needs the distilled model; set distill.enabled"):
        check_rl_config(off)
    with pytest.raises(RlboundError, match=r"\[rl\] seeds must be a int"):
        apply_overrides(preset("quick"), {"rl": {"seeds": 2.5}}, "config file 'x.toml'")


# ------------------------------------------------------------------------------ seed comparison


def test_clearly_different_algorithms_are_distinguishable():
    values = {"a": [0.10, 0.11, 0.12], "b": [0.50, 0.52, 0.49], "c": [0.30, 0.31, 0.29]}
    result = compare_groups(values, metric="pass@1")
    # F by hand: between-group sum of squares over 2 df, within-group over 9 - 3 = 6 df
    means = {k: np.mean(v) for k, v in values.items()}
    grand = np.mean([x for v in values.values() for x in v])
    ssb = sum(3 * (m - grand) ** 2 for m in means.values())
    ssw = sum(((np.array(v) - means[k]) ** 2).sum() for k, v in values.items())
    assert result.f_stat == pytest.approx((ssb / 2) / (ssw / 6))
    # 9 values in 3 groups of 3: 1680 assignments, of which the 3! relabellings of the observed one
    # reach its F, and nothing beats it
    assert result.exact and result.assignments == 1680
    assert result.p_value == pytest.approx(6 / 1680) and result.p_min == pytest.approx(6 / 1680)
    assert result.distinguishable and "differ by more than their seeds do" in result.statement()
    b = result.groups[1]
    assert (b.mean, b.min, b.max) == (pytest.approx(0.5033333), 0.49, 0.52)
    assert b.sd == pytest.approx(np.std([0.50, 0.52, 0.49], ddof=1))
    if result.p_value_f is not None:  # SciPy installed
        assert result.p_value_f < 1e-6
    # Monte Carlo above max_exact agrees with the exact answer
    sampled = compare_groups(values, n_perm=4000, max_exact=10, seed=1)
    assert not sampled.exact and sampled.p_value == pytest.approx((1 + 4000 * 6 / 1680) / 4001, abs=0.004)


def test_overlapping_seeds_are_not_distinguishable_and_small_designs_say_so():
    overlapping = compare_groups({"a": [0.10, 0.30, 0.20], "b": [0.15, 0.28, 0.22], "c": [0.12, 0.25, 0.31]})
    assert overlapping.p_value > 0.5 and overlapping.distinguishable is False
    assert overlapping.statement().endswith("not distinguishable from seed noise")
    # 2 algorithms x 2 seeds: the permutation test can never go below 1/3, however far apart they are
    tiny = compare_groups({"a": [0.1, 0.11], "b": [0.9, 0.91]}, metric="pass@1")
    assert tiny.p_min == pytest.approx(1 / 3) and tiny.p_value == pytest.approx(1 / 3)
    assert "could not show a difference" in tiny.statement() and "add seeds" in tiny.statement()
    one_seed = compare_groups({"a": [0.1], "b": [0.9]})
    assert not one_seed.defined and one_seed.distinguishable is None
    assert "no within-group spread can be measured" in one_seed.statement()
    assert np.isnan(one_seed.groups[0].sd) and one_seed.to_dict()["groups"][0]["sd"] is None
    with pytest.raises(RlboundError, match="group 'a' has no values"):
        compare_groups({"a": [], "b": [1.0]})


# ------------------------------------------------------------------------------ answer agreement


def test_answer_agreement_by_hand():
    # 4 samples, 12 ordered pairs; 3*4+5 and 5+4*3 are one countdown answer, None agrees with nothing
    from rlbound.analysis.solutions import countdown_key

    assert agreement_of_answers(["3*4+5", "5+4*3", "12+5", None], [True, True, True, False],
                                countdown_key) == pytest.approx((2 / 12, 2 / 12))
    # two wrong "7" and two right "8": agreement (2 + 2) / 12, correct agreement 2 / 12
    assert agreement_of_answers(["7", "7", "8", "8"], [False, False, True, True]) == pytest.approx((4 / 12, 2 / 12))
    assert agreement_of_answers(["5"] * 3, [True] * 3) == (1.0, 1.0)
    with pytest.raises(RlboundError, match="at least 2 samples"):
        agreement_of_answers(["5"], [True])

    meta = {"config": {"verifier": {"name": "countdown"}, "task": {"name": "countdown"}}}
    assert has_many_correct_answers(meta) and not has_many_correct_answers({"config": {"verifier": "math"}})
    run = RunSamples("m", ["p0", "p1"], [np.array([1, 1, 1, 0], bool), np.array([0, 0, 1, 1], bool)],
                     [["3*4+5", "5+4*3", "12+5", None], ["7", "7", "8", "8"]], meta=meta)
    result = answer_agreement_run(run, n_boot=200)
    assert result.key_kind == "countdown"
    assert result.mean == pytest.approx((2 / 12 + 4 / 12) / 2) and result.mean_correct == pytest.approx(2 / 12)
    assert result.lo <= result.mean <= result.hi and result.lo_correct <= result.mean_correct <= result.hi_correct
    # compared as plain strings, p0's three correct answers are three different ones
    assert answer_agreement_run(run, "answer", n_boot=0).mean == pytest.approx((0 + 4 / 12) / 2)


# ------------------------------------------------------------------------------ the tiny lab


def test_seeds_give_distinct_models_each_in_its_own_cached_stage(tiny_lab):
    from safetensors.torch import load_file

    out, result, again = tiny_lab
    names = [s.name for s in result.stages]
    assert [n for n in names if n.startswith("rl-")] == [f"rl-{label}" for label in RL_LABELS]
    assert {f"eval-{m}-{f}" for m in MODELS for f in FAMILIES} <= set(names)
    assert all(s.cached for s in again.stages) and not any(s.cached for s in result.stages)
    weights = {label: load_file(str(Path(result.models[label]) / "model.safetensors")) for label in RL_LABELS}
    for a, b in (("grpo", "grpo@s1"), ("distilled+grpo", "distilled+grpo@s1"), ("grpo", "distilled+grpo")):
        assert any(not np.array_equal(weights[a][k].float().numpy(), weights[b][k].float().numpy())
                   for k in weights[a]), f"{a} and {b} have the same weights"
    stages = {s.name: s for s in result.stages}
    specs = {label: json.loads((Path(stages[f"rl-{label}"].path) / "spec.json").read_text()) for label in RL_LABELS}
    assert specs["grpo@s1"]["trainer"]["seed"] == specs["grpo"]["trainer"]["seed"] + 1
    assert specs["distilled+grpo"]["base"] == stages["distill"].key  # imitation first, then RL
    assert specs["grpo"]["base"] == stages["pretrain-base"].key
    metrics = (Path(stages["rl-grpo@s1"].path) / "train" / "metrics.jsonl").read_text().splitlines()
    assert all("kl" in json.loads(m) and "kl_k1" in json.loads(m) for m in metrics)


def test_summary_holds_rl_alone_distillation_alone_and_imitation_then_rl(tiny_lab):
    out, result, _ = tiny_lab
    record = json.loads((out / "lab.json").read_text())
    assert record["summary"] == result.summary
    assert [(r["family"], r["model"]) for r in record["summary"]] == [(f, m) for f in FAMILIES for m in MODELS]
    for row in record["summary"]:
        base = next(r for r in record["summary"] if r["family"] == row["family"] and r["model"] == "base")
        assert row["delta_se"] == pytest.approx(base["pass@4"] - row["pass@1"])  # against the base model
        assert row["solved"] + row["only_base"] - row["only_model"] == base["solved"]
        if row["model"] in RL_LABELS:
            seed = 1 if row["model"].endswith("@s1") else 0
            start = "distilled" if row["model"].startswith("distilled+") else "base"
            assert row["rl"] == {"algorithm": "grpo", "start": start, "group": row["model"].split("@")[0],
                                 "seed": seed, "lr": TINY_LR}
            if start == "distilled":  # imitation then RL, also against imitation alone
                distilled = next(r for r in record["summary"]
                                 if r["family"] == row["family"] and r["model"] == "distilled")
                versus = row["vs_start"]
                assert versus["model"] == "distilled"
                assert versus["delta_pass@1"][0] == pytest.approx(row["pass@1"] - distilled["pass@1"])
                assert versus["net"][0] == row["solved"] - distilled["solved"]
                assert versus["delta_pass@1"][1] <= versus["delta_pass@1"][0] <= versus["delta_pass@1"][2]
            else:
                assert "vs_start" not in row
        else:
            assert "rl" not in row and "vs_start" not in row
    for family in FAMILIES:
        results = json.loads((out / "report" / family / "results.json").read_text())
        assert [r["label"] for r in results["runs"]] == MODELS



def test_the_seed_spread_is_in_the_report_results_and_lab_json(tiny_lab):
    out, result, _ = tiny_lab
    record = json.loads((out / "lab.json").read_text())
    for family in FAMILIES:
        pass1 = {r["model"]: r["pass@1"] for r in record["summary"] if r["family"] == family}
        results = json.loads((out / "report" / family / "results.json").read_text())
        assert record["seeds"][family] == results["seeds"]
        (seed_set,) = results["seeds"]
        assert seed_set["set"] == "every RL configuration (algorithm x start model)"
        first, at_k = seed_set["comparisons"]
        assert (first["metric"], at_k["metric"]) == ("pass@1", "pass@4")
        groups = {g["group"]: g for g in first["groups"]}
        assert set(groups) == {"grpo", "distilled+grpo"}
        for name, group in groups.items():
            values = {v["run"]: v["value"] for v in group["values"]}
            assert values == {label: pytest.approx(pass1[label]) for label in (name, f"{name}@s1")}
            assert group["seeds"] == 2 and group["min"] <= group["mean"] <= group["max"]
            assert group["sd"] == pytest.approx(float(np.std(list(values.values()), ddof=1)))
        assert "permutation" in first["method"]
        if first["f"] is None:  # every seed of both scored the same (0 on this model's countdown)
            assert len({v["value"] for g in groups.values() for v in g["values"]}) == 1
            assert "every seed of every group gave the same value" in first["statement"]
        else:  # 2 groups x 2 seeds: the permutation test cannot go below 1/3
            assert first["p_min"] == pytest.approx(1 / 3) and first["distinguishable"] is False
        page = (out / "report" / family / "report.html").read_text()
        seeds = page[page.index('<h2 id="seeds">'):]
        assert "grpo@s1" in seeds and "distilled+grpo@s1" in seeds and "permutation test" in seeds
        # countdown has many correct answers: answer agreement replaces maj@k in the summary
        summary = page[page.index("<h2>Summary</h2>"):page.index("<h2>pass@k curves</h2>")]
        if family == "countdown":
            assert 'id="agreement"' in summary and "maj@4 =" not in summary.split('id="agreement"')[0]
        else:
            assert 'id="agreement"' not in summary and "maj@4 =" in summary
        assert all(r["answer_agreement"] is not None for r in results["runs"])
        assert all(r["many_correct_answers"] == (family == "countdown") for r in results["runs"])
