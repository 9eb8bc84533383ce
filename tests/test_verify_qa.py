"""The qa verifier (rlbound.verify.qa) on hand-checked cases, and SimpleQA's numbers
(rlbound.analysis.qa) in a run's report: no model, no server."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from rlbound.analysis.qa import correct_given_attempted, f_score, is_qa_run, qa_metrics
from rlbound.analysis.samples import RunSamples
from rlbound.errors import RlboundError
from rlbound.verify.base import STATUS_NO_ANSWER, STATUS_NOT_ATTEMPTED, STATUS_OK, STATUSES, load_verifier
from rlbound.verify.pool import VerifyCache, verify_batch
from rlbound.verify.qa import (
    extract_qa_answer,
    is_refusal,
    normalise_qa,
    parse_qa_reference,
    qa_reference,
    token_f1,
)


@pytest.mark.parametrize("text, key", [
    ("The Eiffel Tower", "eiffel tower"),          # article, case
    ("an Apple a day", "apple day"),               # articles anywhere
    ("Theodore", "theodore"),                      # "the" only as a word
    ("U.S.A.", "usa"),                             # punctuation dropped
    ("Paris, France!", "paris france"),
    ("1,000", "1000"),                             # thousands comma
    ("12,345,678 people", "12345678 people"),
    ("3.5", "3.5"),                                # decimal point kept: not 35
    ("two", "2"), ("Twenty", "20"), ("Twenty-One", "20 1"),  # number words 0-20 only
    ("first", "first"),                            # ordinals left alone
    ("50%", "50 percent"),
    ("Jean-Paul Sartre", "jean paul sartre"),      # dashes split words
    ("Kurt Gödel", "kurt godel"),                  # accents dropped
    ("“Hamlet”", "hamlet"),                        # Unicode quotes
    ("  many   spaces\n", "many spaces"),
])
def test_normalisation(text, key):
    assert normalise_qa(text) == key
    assert normalise_qa(key) == key  # idempotent: the pool checks normalised keys


@pytest.mark.parametrize("completion, answer", [
    ("Paris", "Paris"),
    ("Paris.", "Paris"),
    ("The capital of France is Paris.", "The capital of France is Paris"),  # no marker: the last line
    ("Let me think.\nIt is in Europe.\nParis", "Paris"),
    ("Answer: Paris. It has been the capital since 987.", "Paris"),
    ("**Answer:** Wolfgang Amadeus Mozart", "Wolfgang Amadeus Mozart"),   # names longer than 2 words
    ("Some working.\nFinal Answer:\nJ. R. R. Tolkien.", "J. R. R. Tolkien"),  # initials do not end it
    ("I am fairly sure the answer is St. Louis. Hope that helps.", "St. Louis"),
    ("Q: who?\nA: Marie Curie", "Marie Curie"),
    ("The answer is \\boxed{\\text{Mount Everest}}.", "Mount Everest"),
    ("\\boxed{1889} was the year. Final answer: 1889", "1889"),
    ("<answer> Ada Lovelace </answer> and more text", "Ada Lovelace"),
    ("<think>Hmm, maybe Bohr.</think>\nNiels Bohr", "Niels Bohr"),
    ("<think>still thinking and cut off", None),                          # a truncated trace
    ("", None), ("   \n  ", None),
])
def test_extraction(completion, answer):
    assert extract_qa_answer(completion) == answer


@pytest.mark.parametrize("answer, refused", [
    ("I don't know", True), ("I do not know who painted it.", True), ("I'm not sure.", True),
    ("Sorry, I cannot answer that question.", True), ("Unknown", True), ("N/A", True),
    ("I don't have enough information to say.", True), ("There is no information about this.", True),
    ("I'm not sure, but I think it was Paris", False),   # a guess is an attempt
    ("Paris", False), ("Not Paris but Lyon", False), ("The Unknown Soldier", False),
])
def test_refusals(answer, refused):
    assert is_refusal(answer) is refused


def test_token_f1_partial_credit():
    assert token_f1("Barack Obama", "Barack Hussein Obama") == pytest.approx(2 * 1.0 * (2 / 3) / (1 + 2 / 3))
    assert token_f1("The Beatles", "beatles") == 1.0  # normalised first
    assert token_f1("Lyon", "Paris") == 0.0
    assert token_f1("a", "the") == 1.0  # both empty once normalised (SQuAD's rule)
    assert token_f1("paris paris", "paris") == pytest.approx(2 / 3)  # tokens counted with multiplicity


def _grade(verifier, gold, completions):
    return verify_batch(verifier, [gold] * len(completions), completions, cache=VerifyCache())


def test_exact_and_f1_verdicts():
    qa = load_verifier("qa")
    completions = ["The Eiffel Tower.", "eiffel tower", "Answer: EIFFEL-TOWER", "The Louvre", "I don't know.",
                   "", "..."]
    verdicts = _grade(qa, "Eiffel Tower", completions)
    assert [v.correct for v in verdicts] == [True, True, True, False, False, False, False]
    assert [v.status for v in verdicts] == [STATUS_OK] * 4 + [STATUS_NOT_ATTEMPTED, STATUS_NO_ANSWER, STATUS_NO_ANSWER]
    assert verdicts[4].answer == "I don't know"

    numbers = _grade(qa, "1,000", ["1000", "1,000.", "one thousand", "10000"])
    assert [v.correct for v in numbers] == [True, True, False, False]  # number words stop at twenty
    assert [v.correct for v in _grade(qa, "2", ["two", "Two.", "II"])] == [True, True, False]
    assert [v.correct for v in _grade(qa, "3.5", ["3.5", "35"])] == [True, False]

    f1 = load_verifier("qa", match="f1", f1_threshold=0.5)
    partial = _grade(f1, "Barack Hussein Obama", ["Barack Obama", "Obama", "Michelle Obama", "Joe Biden"])
    # F1: 0.8, 0.5, 0.4, 0.0
    assert [v.correct for v in partial] == [True, True, False, False]
    strict = load_verifier("qa", match="f1", f1_threshold=0.9)
    assert [v.correct for v in _grade(strict, "Barack Hussein Obama", ["Barack Obama"])] == [False]
    assert f1.settings() == {"verifier": "qa", "rules": 1, "match": "f1", "f1_threshold": 0.5}
    assert qa.settings() == {"verifier": "qa", "rules": 1, "match": "exact"}


def test_json_references_with_several_answers_and_a_question():
    ref = qa_reference(["New York City", "NYC"], question="Where is the Met?")
    assert parse_qa_reference(ref).answers == ("New York City", "NYC")
    assert parse_qa_reference(ref).question == "Where is the Met?"
    assert parse_qa_reference("Paris").answers == ("Paris",)
    assert parse_qa_reference('{"not": "a reference"}').answers == ('{"not": "a reference"}',)  # plain gold
    verdicts = verify_batch("qa", [ref] * 3, ["nyc", "New York City.", "Boston"])
    assert [v.correct for v in verdicts] == [True, True, False]
    with pytest.raises(RlboundError, match="'answer' must be a non-empty string"):
        parse_qa_reference('{"answer": []}')
    with pytest.raises(RlboundError, match="needs a non-empty gold answer"):
        qa_reference("  ")


def test_bad_options_and_an_empty_gold_are_one_line_errors():
    with pytest.raises(RlboundError, match="match must be one of exact, f1"):
        load_verifier("qa", match="fuzzy")
    with pytest.raises(RlboundError, match=r"f1_threshold must be a number in \(0, 1\]"):
        load_verifier("qa", f1_threshold=0)
    with pytest.raises(RlboundError, match="empty once normalised"):
        load_verifier("qa").check("The", "the answer")
    assert "not_attempted" in STATUSES


# ------------------------------------------------------------------------------ SimpleQA's numbers
def _run(statuses: list[list[str]], correct: list[list[bool]], verifier: str = "qa") -> RunSamples:
    return RunSamples("run", [f"p{i}" for i in range(len(statuses))], [np.array(c) for c in correct],
                      [[None] * len(c) for c in correct], statuses=statuses,
                      meta={"config": {"verifier": {"name": verifier, "settings": {}}}})


def test_simpleqa_numbers_by_hand():
    # p0: 2 correct, 1 wrong, 1 not attempted; p1: 1 wrong, 1 no answer, 2 not attempted; p2: 4 correct
    run = _run(
        [["ok", "ok", "ok", "not_attempted"], ["ok", "no_answer", "not_attempted", "not_attempted"], ["ok"] * 4],
        [[True, True, False, False], [False] * 4, [True] * 4],
    )
    m = qa_metrics(run, n_boot=200, seed=1)
    correct = (0.5 + 0 + 1) / 3
    not_attempted = (0.25 + 0.75 + 0) / 3
    incorrect = (0.25 + 0.25 + 0) / 3
    assert (m.correct.mean, m.not_attempted.mean, m.incorrect.mean) == pytest.approx((correct, not_attempted, incorrect))
    cga = correct / (correct + incorrect)
    assert m.correct_given_attempted.mean == pytest.approx(cga)
    assert m.f_score.mean == pytest.approx(2 * correct * cga / (correct + cga))
    for rate in (m.correct, m.incorrect, m.not_attempted, m.correct_given_attempted, m.f_score):
        assert rate.lo <= rate.mean <= rate.hi
    assert m.failed_checks == 0 and m.statuses == {"ok": 8, "not_attempted": 3, "no_answer": 1}
    none = qa_metrics(run, n_boot=0)
    assert math.isnan(none.correct.lo) and none.correct.mean == pytest.approx(correct)
    assert f_score(0.0, 0.0) == 0.0 and math.isnan(f_score(0.0, float("nan")))
    assert math.isnan(correct_given_attempted(0.0, 0.0))
    assert is_qa_run(run.meta) and not is_qa_run({"config": {"verifier": {"name": "math"}}})


def test_the_report_carries_simpleqa_numbers_for_qa_runs_only(tmp_path, quiet):
    from rlbound.report.export import build_report_data, results_dict

    qa_run = _run([["ok", "not_attempted"], ["ok", "ok"]], [[True, False], [False, True]], verifier="qa-judge")
    math_run = _run([["ok", "ok"], ["ok", "ok"]], [[True, False], [False, True]], verifier="math")
    math_run.label = "math"
    results = results_dict(build_report_data([qa_run, math_run], n_boot=50))
    simpleqa = results["runs"][0]["simpleqa"]
    assert simpleqa["correct"]["mean"] == pytest.approx(0.5)
    assert simpleqa["not_attempted"]["mean"] == pytest.approx(0.25)
    assert simpleqa["incorrect"]["mean"] == pytest.approx(0.25)
    assert simpleqa["f_score"]["mean"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert results["runs"][1]["simpleqa"] is None
    json.dumps(results, allow_nan=False)

    from rlbound.report.html import render_html

    page = render_html(build_report_data([qa_run], n_boot=50))
    assert "Factual QA (SimpleQA&#x27;s numbers)" in page or "Factual QA (SimpleQA's numbers)" in page
