"""The lab's strategies, corpora and configuration: exact traces, honest failures, knob errors."""

from __future__ import annotations

import random

import pytest

from rlbound.errors import RlboundError
from rlbound.lab.config import LabConfig, config_toml, load_config, preset
from rlbound.lab.corpus import build_corpus, corpus_stats, lab_problem, lab_task
from rlbound.lab.strategies import BACKTRACK_MARKER, CAPABLE, countdown_shape, program_class, write_trace
from rlbound.lab.world import countdown_problem, program_problem
from rlbound.verify import verify_batch

WORLD = LabConfig().world


def _problems(family: str, count: int = 40):
    return [lab_problem(family, WORLD, i, "train") for i in range(count)]


def _verdicts(problems, traces):
    verifier = "countdown" if problems[0].metadata["family"] == "countdown" else "exact"
    return [v.correct for v in verify_batch(verifier, [p.reference for p in problems], traces)]


def test_countdown_shape_on_hand_checked_problems():
    assert countdown_shape([3, 4, 5], 17) == "chain"  # 3*4+5
    assert countdown_shape([1, 4, 10, 6], 80) == "tree"  # (1+4)*(10+6); no chain reaches 80
    assert program_class("a=1;b=a+2;print(b)") == "short"
    assert program_class("a=1;b=a+2;c=b*2;a=c-1;print(a)") == "long"


def test_shape_filter_gives_problems_of_that_class():
    for shape in ("chain", "tree"):
        for i in range(5):
            problem = countdown_problem(0, 2, i, "test", shape)
            assert problem.metadata["class"] == shape
            assert countdown_shape(problem.metadata["numbers"], problem.metadata["target"]) == shape
            assert f"-{shape}-" in problem.id
    with pytest.raises(RlboundError, match="difficulty >= 2"):
        countdown_problem(0, 1, 0, "test", "tree")


@pytest.mark.parametrize("strategy", sorted(CAPABLE))
def test_every_strategy_solves_what_it_can_at_error_rate_zero(strategy):
    family = "countdown" if strategy in ("chain", "search") else "programs"
    problems = [p for p in _problems(family) if p.metadata["class"] in CAPABLE[strategy]]
    assert len(problems) >= 10
    rng = random.Random(0)
    traces = [write_trace(strategy, p, True, rng, error_rate=0.0) for p in problems]
    assert all(_verdicts(problems, traces)), [t for t, ok in zip(traces, _verdicts(problems, traces)) if not ok][:2]
    if strategy == "search":
        assert all(f"\n{BACKTRACK_MARKER}\n" in t for t in traces)
    if strategy == "direct":
        assert all(t.startswith("#### ") and "\n" not in t for t in traces)


@pytest.mark.parametrize("strategy", sorted(CAPABLE))
def test_failed_attempts_look_right_but_are_wrong(strategy):
    family = "countdown" if strategy in ("chain", "search") else "programs"
    problems = _problems(family, 20)
    rng = random.Random(1)
    traces = [write_trace(strategy, p, False, rng) for p in problems]
    assert not any(_verdicts(problems, traces))
    assert all("\n#### " in t or t.startswith("#### ") for t in traces)  # a well-formed answer line


def test_wrong_steps_make_wrong_answers_at_the_rate_asked():
    problems = [p for p in _problems("countdown", 200) if p.metadata["class"] == "chain"]
    rng = random.Random(2)
    clean = _verdicts(problems, [write_trace("chain", p, True, rng, 0.0) for p in problems])
    noisy = _verdicts(problems, [write_trace("chain", p, True, rng, 0.3) for p in problems])
    assert all(clean)
    # two or three steps each wrong with p = 0.3: roughly half the answers go wrong
    assert 0.25 < 1 - sum(noisy) / len(noisy) < 0.8


def test_a_strategy_cannot_be_asked_to_solve_beyond_its_reach():
    tree = countdown_problem(0, 2, 0, "train", "tree")
    with pytest.raises(ValueError, match="cannot solve"):
        write_trace("chain", tree, True, random.Random(0))
    with pytest.raises(ValueError, match="writes programs traces"):
        write_trace("stepwise", tree, True, random.Random(0))


def test_corpus_follows_its_knobs_and_is_deterministic():
    config = preset("quick")
    corpus = config.base_corpus
    examples = build_corpus(config.world, corpus)
    assert examples == build_corpus(config.world, corpus)
    stats = corpus_stats(examples)
    assert len(examples) == corpus.problems * corpus.traces_per_problem
    # the base corpus holds search out and lets chain fail on trees, direct on long programs
    assert not any(key.startswith("countdown/search") for key in stats)
    assert stats["countdown/chain/tree"]["solved"] == 0 < stats["countdown/chain/tree"]["traces"]
    assert stats["programs/direct/long"]["solved"] == 0
    teacher = build_corpus(config.world, config.teacher_corpus)
    tstats = corpus_stats(teacher)
    assert tstats["countdown/search/tree"]["solved"] == tstats["countdown/search/tree"]["traces"] > 0
    share = sum(v["traces"] for k, v in stats.items() if "/tree" in k) / sum(
        v["traces"] for k, v in stats.items() if k.startswith("countdown"))
    assert abs(share - config.world.tree_share) < 0.06
    assert all(len(e.prompt) + len(e.completion) + 2 <= config.model.max_seq_len for e in teacher)


def test_test_problems_are_never_training_problems():
    config = preset("quick")
    for family in ("countdown", "programs"):
        test = {p.metadata["canonical"] for p in lab_task(family, config.world, 200).problems}
        train = {lab_problem(family, config.world, i, "train").metadata["canonical"] for i in range(2000)}
        assert test and not test & train


@pytest.mark.parametrize("bad, message", [
    ({"base_corpus": {"strategy_shares": {"guess": 1.0}}}, "unknown strategy 'guess'"),
    ({"base_corpus": {"solves": {"chain": ["chain", "tree"]}}}, "cannot solve 'tree'"),
    ({"base_corpus": {"strategy_shares": {"chain": 0.0}}}, "none of its strategies"),
    ({"base_corpus": {"error_rate": 1.5}}, "error_rate must be in"),
])
def test_impossible_corpus_knobs_are_one_line_errors(bad, message):
    from rlbound.lab.config import apply_overrides
    from rlbound.lab.corpus import check_corpus_config

    config = apply_overrides(LabConfig(), bad, "test")
    with pytest.raises(RlboundError, match=message):
        check_corpus_config(config.base_corpus, "base_corpus")


def test_config_toml_round_trips_and_bad_files_name_the_key(tmp_path):
    for name in ("quick", "default", "full"):
        path = tmp_path / f"{name}.toml"
        path.write_text(config_toml(preset(name)))
        assert load_config("default", path) == preset(name)
    partial = tmp_path / "partial.toml"
    partial.write_text("[base_corpus]\nstrategy_shares = { search = 0.2 }\n[pretrain]\nsteps = 10\n")
    config = load_config("quick", partial)
    assert config.base_corpus.strategy_shares == {"chain": 1.0, "search": 0.2, "stepwise": 0.8, "direct": 0.2}
    assert config.pretrain.steps == 10 and config.teacher_pretrain == preset("quick").teacher_pretrain
    for text, message in [
        ("[pretrain]\nstepz = 3\n", "unknown key 'stepz' in \\[pretrain\\]"),
        ("[pretraining]\nsteps = 3\n", "unknown section \\[pretraining\\]"),
        ("[pretrain]\nsteps = 'many'\n", "steps must be a int"),
        ("[pretrain\n", "partial.toml"),
    ]:
        partial.write_text(text)
        with pytest.raises(RlboundError, match=message):
            load_config("default", partial)
    with pytest.raises(RlboundError, match="unknown lab preset"):
        preset("huge")


def test_programs_world_draws_each_difficulty():
    difficulties = {lab_problem("programs", WORLD, i, "test").metadata["difficulty"] for i in range(60)}
    assert difficulties == set(WORLD.programs_difficulties)
    assert program_problem(0, 3, 0, "test").metadata["class"] == "long"


def test_example_configs_load_and_make_valid_corpora():
    from pathlib import Path

    from rlbound.lab.corpus import check_corpus_config

    files = sorted((Path(__file__).parent.parent / "examples" / "lab").glob("*.toml"))
    assert len(files) >= 2
    for path in files:
        config = load_config("quick", path)
        check_corpus_config(config.base_corpus, "base_corpus")
        check_corpus_config(config.teacher_corpus, "teacher_corpus")
    covered = load_config("default", files[0] if files[0].stem == "covered" else files[1])
    assert covered.base_corpus.strategy_shares["search"] > 0
