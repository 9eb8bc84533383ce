"""The "math" verifier against graders written outside this project, on real model outputs.

The files are in ../shared/data/graded/ (see its README): Qwen2.5-Math's graded MATH samples, ToRA's
GSM8K outputs, OpenAI's graded GSM8K solutions (verbatim, ending in "A: N") and Math-Verify's own
test cases. Per source, the share of cases where rlbound's verdict equals the trusted label must
reach the issue's bar, and no case the grader rejects may be accepted (a false acceptance inflates
every pass@k).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rlbound.verify import MathVerifier
from rlbound.verify.agreement import GradedCase, measure_agreement, read_graded

# (file, minimum agreement). Math-Verify's test cases are partly synthetic (bare predictions
# wrapped in a sentence, settings that are not the defaults), hence the lower bar there.
BARS = {
    "qwen_math_cot100.jsonl": 0.995,
    "tora_gsm8k.jsonl": 0.995,
    "gsm8k_openai_solutions.jsonl": 0.995,
    "math_verify_tests.jsonl": 0.97,
    "qwen_grader_tests.jsonl": 1.0,
}

# Disagreements that are the label's fault, with the reason (see the data README).
LABEL_ERRORS = {
    "qwen-cot100:72:7": r"\boxed{10000} equals the gold 10{,}000; the Qwen grader failed on the "
    "LaTeX thousands separator and labelled it wrong",
}


def _cases(graded: Path, name: str) -> list[GradedCase]:
    cases = read_graded(graded / name)
    # Free-text predictions without any answer marker are Math-Verify's parser tests, not
    # completions (the data README keeps them apart).
    return [case for case in cases if not case.source.endswith("/freeform")]


@pytest.fixture
def graded(shared_data: Path) -> Path:
    folder = shared_data / "graded"
    if not folder.is_dir():
        pytest.skip(f"graded files not found at {folder} (they live in the shared data folder)")
    return folder


@pytest.mark.parametrize("name", sorted(BARS))
def test_agreement_with_trusted_graders(graded: Path, name: str) -> None:
    cases = _cases(graded, name)
    assert cases, f"{name} has no cases"
    for source in measure_agreement(cases, MathVerifier(), timeout_s=10.0):
        false_accepts = [(c.id, c.gold, v.answer) for c, v in source.false_accepts if c.id not in LABEL_ERRORS]
        false_rejects = [(c.id, c.gold, v.answer, v.status) for c, v in source.false_rejects]
        label_errors = sum(1 for c, _ in source.false_accepts + source.false_rejects if c.id in LABEL_ERRORS)
        share = (source.agree + label_errors) / source.cases
        assert not false_accepts, f"{source.source}: accepted what the grader rejects: {false_accepts}"
        assert share >= BARS[name], (
            f"{source.source}: agreement {share:.4f} < {BARS[name]} on {source.cases} cases; "
            f"first disagreements: {false_rejects[:10]}"
        )


# One real output per extraction rule (file, case id, the answer rlbound must extract).
REAL_OUTPUTS_BY_RULE = [
    ("qwen_math_cot100.jsonl", "qwen-cot100:0:0", "420"),  # boxed, long chain of thought
    ("math_verify_tests.jsonl", "mv:test_numina_cases:12", "(1, 2), (2, 1), (-1, -20), (-20, -1)"),  # box list
    ("math_verify_tests.jsonl", "mv:test_math_extraction_additional_cases:28", "-2, 1"),  # \quad\text{and}
    ("math_verify_tests.jsonl", "mv:test_open_thoughts:24", "-2(x - 1)^2 + 5, 3(x + 2)^2 - 2"),
    # Minerva's "Final Answer: The final answer is X" supersedes boxes in the working.
    ("math_verify_tests.jsonl", "mv:test_math_extraction_additional_cases:17", "10,455"),
    # "Final Answer: <sentence>": the answer-like span, never the sentence.
    ("math_verify_tests.jsonl", "mv:test_math_extraction_edge_cases:6", "120"),
    ("math_verify_tests.jsonl", "mv:test_math_extraction_additional_cases:1", "3"),
    ("math_verify_tests.jsonl", "mv:test_latex_notation_math:4", "$12 $ and $13 $"),
    ("gsm8k_openai_solutions.jsonl", "gsm8k-openai:1:6b_finetuning:native", "26"),  # last line "A: 26"
    ("tora_gsm8k.jsonl", "tora:tora-70b-v1.0:0", "18"),  # box after the program's output
    ("tora_gsm8k.jsonl", "tora:tora-70b-v1.0:98", "5"),  # the ```output block, prose without a marker
]


@pytest.mark.parametrize("name, case_id, answer", REAL_OUTPUTS_BY_RULE)
def test_each_rule_on_a_real_output(graded: Path, name: str, case_id: str, answer: str) -> None:
    (case,) = [c for c in read_graded(graded / name) if c.id == case_id]
    assert MathVerifier().extract(case.completion) == answer


def test_known_label_errors_still_disagree(graded: Path) -> None:
    """A listed label error that rlbound now agrees with means the list is stale."""
    cases = [c for c in _cases(graded, "qwen_math_cot100.jsonl") if c.id in LABEL_ERRORS]
    assert len(cases) == len(LABEL_ERRORS)
    (source,) = measure_agreement(cases, MathVerifier())
    assert source.agree == 0
