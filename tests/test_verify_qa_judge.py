"""The qa-judge verifier (rlbound.verify.qa_judge): parsing and settings without a server, then
the plumbing against the session's real vLLM server (``vllm_server`` in tests/conftest.py).

The served model is the tiny arithmetic model, so these tests check the plumbing and the cache,
not the judge's wisdom: its replies are compared with the same request sent straight through the
``openai`` engine, and counted in the server's own access log. Its context is 256 characters, so
the server tests grade with a short custom rubric; the built-in one is refused by the server,
which is itself a test of the one-line error.
"""

from __future__ import annotations

import json
import os
import pickle
import socket
import subprocess
import sys
import time

import pytest

pytest.importorskip("openai")

from rlbound.engines.base import SamplingParams, load_engine  # noqa: E402
from rlbound.errors import RlboundError  # noqa: E402
from rlbound.tasks.base import Problem  # noqa: E402
from rlbound.verify.base import STATUS_ERROR, STATUS_NOT_ATTEMPTED, STATUS_OK, load_verifier  # noqa: E402
from rlbound.verify.pool import VerifyCache, verify_batch  # noqa: E402
from rlbound.verify.qa import parse_qa_reference, qa_reference  # noqa: E402
from rlbound.verify.qa_judge import DEFAULT_RUBRIC, VERDICTS, parse_verdict, render_rubric  # noqa: E402
from tests.conftest import SERVED_MODEL  # noqa: E402
from tests.test_cli import assert_one_line_error  # noqa: E402

SHORT_RUBRIC = "Q: {question}\nGold: {gold}\nAnswer: {answer}\nVerdict:"
SECRET = "sk-rlbound-judge-secret"  # must never reach run.json
CHAT = "/v1/chat/completions"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"  # nothing listens there once closed


def _judge(url: str, **options):
    return load_verifier("qa-judge", judge_model=SERVED_MODEL, judge_url=url, judge_rubric=SHORT_RUBRIC,
                         judge_max_retries=1, **options)


# ------------------------------------------------------------------------------ no server needed
@pytest.mark.parametrize("reply, verdict", [
    ("CORRECT", "CORRECT"), (" incorrect.", "INCORRECT"), ("**NOT_ATTEMPTED**", "NOT_ATTEMPTED"),
    ("Not attempted", "NOT_ATTEMPTED"), ("Correct\nThe answer names the same city.", "CORRECT"),
    ("The gold answer is Paris and the answer says Lyon.\nVerdict: INCORRECT", "INCORRECT"),
    ("<think>CORRECT? no.</think>INCORRECT", "INCORRECT"),
    ("not correct", None), ("The answer is correct", None), ("Correctly answered", None), ("12+3", None),
    ("", None), ("INCORREC", None),
])
def test_parse_verdict(reply, verdict):
    assert parse_verdict(reply) == verdict


def test_the_rubric_is_filled_once_and_several_golds_are_listed():
    text = render_rubric(SHORT_RUBRIC, "Who wrote {answer}?", ["Ada", "Ada Lovelace"], r"\frac{1}{2} {gold}")
    assert text == "Q: Who wrote {answer}?\nGold: Ada (also accepted: Ada Lovelace)\nAnswer: \\frac{1}{2} {gold}\nVerdict:"
    full = render_rubric(DEFAULT_RUBRIC, "Capital of France?", ["Paris"], "Lyon")
    assert "Question: Capital of France?\nGold answer: Paris\nAnswer to grade: Lyon" in full
    assert all(word in full for word in VERDICTS)


def test_settings_record_the_judge_but_not_its_server_or_key(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    judge = load_verifier("qa-judge", judge_model="gpt-judge", judge_url="http://127.0.0.1:9/v1")
    settings = judge.settings()
    assert settings["rubric"] == "rlbound-simpleqa-1" and settings["judge_model"] == "gpt-judge"
    assert settings["judge_rubric"] is None and settings["judge_engine"] == "openai"
    assert "127.0.0.1" not in json.dumps(settings) and SECRET not in json.dumps(settings)
    (tmp_path / "rubric.txt").write_text(SHORT_RUBRIC)
    custom = load_verifier("qa-judge", judge_model="gpt-judge", judge_url="http://h:1/v1",
                           judge_rubric=str(tmp_path / "rubric.txt"))
    assert custom.settings()["rubric"].startswith("custom-") and custom.settings()["judge_rubric"] == SHORT_RUBRIC

    from rlbound.scoring import verifier_from_run  # run.json → the same judge, given its URL again

    meta = {"config": {"verifier": {"name": "qa-judge", "settings": custom.settings()}}}
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(RlboundError, match="needs the judge server's URL: --judge-url"):
        verifier_from_run(meta)
    rebuilt = verifier_from_run(meta, {"judge_url": "http://other:2/v1"})
    assert rebuilt.settings() == custom.settings() and rebuilt.judge_url == "http://other:2/v1"
    assert pickle.loads(pickle.dumps(rebuilt)).settings() == custom.settings()


def test_bad_judge_options_are_one_line_errors():
    with pytest.raises(RlboundError, match="needs the judge's model: --judge-model"):
        load_verifier("qa-judge", judge_url="http://h:1/v1")
    with pytest.raises(RlboundError, match="judge engine must be openai"):
        load_verifier("qa-judge", judge_model="m", judge_url="http://h:1/v1", judge_engine="hf")
    with pytest.raises(RlboundError, match="neither a file nor a rubric"):
        load_verifier("qa-judge", judge_model="m", judge_url="http://h:1/v1", judge_rubric="no-such-file.txt")
    with pytest.raises(RlboundError, match=r"the judge rubric lacks \{gold\}"):
        load_verifier("qa-judge", judge_model="m", judge_url="http://h:1/v1", judge_rubric="Q {question} A {answer}")


def test_the_question_travels_in_the_reference():
    judge = _judge("http://127.0.0.1:9/v1")
    reference = judge.reference_for(Problem("p1", "Capital of France?", "Paris"))
    assert parse_qa_reference(reference) == parse_qa_reference(qa_reference("Paris", "Capital of France?"))
    carried = qa_reference(["NYC", "New York"], "Where is the Met?")
    assert judge.reference_for(Problem("p2", "ignored", carried)) == carried
    assert load_verifier("qa").reference_for(Problem("p1", "Capital of France?", "Paris")) == "Paris"
    with pytest.raises(RlboundError, match="carries no question"):
        verify_batch(judge, ["Paris"], ["Lyon"])


def test_no_server_at_the_judge_url_is_a_one_line_error():
    url = _dead_url()
    with pytest.raises(RlboundError) as err:
        verify_batch(_judge(url, judge_timeout_s=5), [qa_reference("Paris", "Capital?")], ["Lyon"])
    assert str(err.value) == (f"qa-judge (model {SERVED_MODEL!r}): no server answering at {url} (connection refused) "
                              "after 1 retries; start it or check --judge-url")


# ------------------------------------------------------------------------------ with the server (slow: it starts)
QUESTIONS = [
    ("Capital of France?", "Paris", ["Paris", "Lyon", "Paris", "I don't know"]),
    ("2+3=?", "5", ["5", "6", "5"]),
    ("Who wrote Emma?", "Jane Austen", ["Austen", "J. Austen", "Austen"]),
]


def _batch() -> tuple[list[str], list[str]]:
    references, completions = [], []
    for question, gold, answers in QUESTIONS:
        references += [qa_reference(gold, question)] * len(answers)
        completions += answers
    return references, completions


def _direct_verdicts(server_url: str, judge, references, completions, guided: bool) -> list[str | None]:
    """The judge's prompts sent straight through the openai engine: the verdict each reply parses to."""
    extra = {"structured_outputs": {"choice": list(VERDICTS)}} if guided else {}
    engine = load_engine("openai", SERVED_MODEL, base_url=server_url, endpoint="chat", logprobs=False,
                         extra_body=extra)
    prompts = [engine.chat_prompt(judge.prompt(parse_qa_reference(r), judge.normalise(judge.extract(c))))
               for r, c in zip(references, completions)]
    replies = engine.generate(prompts, SamplingParams(temperature=0.0, max_tokens=judge.judge_max_tokens),
                              [[0]] * len(prompts))
    return [parse_verdict(samples[0].text) for samples in replies]


def _expected_status(verdict: str | None) -> tuple[bool, str]:
    return {"CORRECT": (True, STATUS_OK), "INCORRECT": (False, STATUS_OK),
            "NOT_ATTEMPTED": (False, STATUS_NOT_ATTEMPTED), None: (False, STATUS_ERROR)}[verdict]


def _wait_for_count(server, path: str, expected: int, timeout_s: float = 10.0) -> int:
    deadline = time.time() + timeout_s
    while server.requests(path) < expected and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(0.3)  # and nothing more arrives
    return server.requests(path)


@pytest.mark.slow
def test_guided_verdicts_are_the_servers_and_a_second_grading_sends_nothing(vllm_server, quiet):
    references, completions = _batch()
    distinct = len(set(zip(references, completions)))
    judge, cache = _judge(vllm_server.url, judge_guided=True), VerifyCache()
    before = vllm_server.requests(CHAT)
    verdicts = verify_batch(judge, references, completions, cache=cache)
    assert _wait_for_count(vllm_server, CHAT, before + distinct) == before + distinct  # one request per distinct answer
    assert cache.checks == distinct

    expected = _direct_verdicts(vllm_server.url, judge, references, completions, guided=True)
    assert None not in expected  # guided: every reply is a verdict word
    assert [(v.correct, v.status) for v in verdicts] == [_expected_status(e) for e in expected]
    assert verdicts[3].answer == "I don't know"

    # The same answers again: all from the cache, not one request, also with the server unreachable.
    after = _wait_for_count(vllm_server, CHAT, before + distinct + len(references))  # and the direct ones
    for url in (vllm_server.url, _dead_url()):
        again = verify_batch(_judge(url, judge_guided=True), references, completions, cache=cache)
        assert again == verdicts
    assert _wait_for_count(vllm_server, CHAT, after + 1, timeout_s=1.0) == after
    assert cache.checks == distinct and cache.hits == 2 * distinct


@pytest.mark.slow
def test_free_replies_that_are_no_verdict_get_status_error_not_a_crash(vllm_server, quiet, caplog):
    references, completions = _batch()
    judge = _judge(vllm_server.url)
    verdicts = verify_batch(judge, references, completions, cache=VerifyCache())
    expected = _direct_verdicts(vllm_server.url, judge, references, completions, guided=False)
    assert [(v.correct, v.status) for v in verdicts] == [_expected_status(e) for e in expected]
    assert any(v.status == STATUS_ERROR for v in verdicts)  # an arithmetic model writes sums, not verdicts
    assert "judge replies were no verdict" in caplog.text


@pytest.mark.slow
def test_a_judge_prompt_the_server_refuses_is_a_one_line_error(vllm_server):
    judge = load_verifier("qa-judge", judge_model=SERVED_MODEL, judge_url=vllm_server.url)  # the full rubric
    with pytest.raises(RlboundError) as err:
        verify_batch(judge, [qa_reference("Paris", "Capital of France?")], ["Lyon"], cache=VerifyCache())
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"qa-judge (model {SERVED_MODEL!r}): server said (400)")
    assert "maximum context length" in message


@pytest.mark.slow
def test_sample_report_and_reverify_with_the_judge_flags(vllm_server, tmp_path):
    tasks = tmp_path / "qa.jsonl"
    tasks.write_text("".join(json.dumps({"id": f"q{i}", "question": q, "answer": gold}) + "\n"
                             for i, (q, gold, _) in enumerate(QUESTIONS)))
    (tmp_path / "rubric.txt").write_text(SHORT_RUBRIC)
    run, env = tmp_path / "run", {**os.environ, "OMP_NUM_THREADS": "1", "OPENAI_API_KEY": SECRET}
    env.pop("OPENAI_BASE_URL", None)
    cli = [sys.executable, "-m", "rlbound.cli", "--quiet"]
    sample = cli + ["sample", "--task", str(tasks), "--template", "plain", "--engine", "openai",
                    "-E", f"base_url={vllm_server.url}", "--model", SERVED_MODEL, "--out", str(run), "-n", "3",
                    "--max-tokens", "8", "--verifier", "qa-judge", "--judge-engine", "openai",
                    "--judge-model", SERVED_MODEL, "--judge-url", vllm_server.url, "-V", "judge_guided=true",
                    "-V", f"judge_rubric={tmp_path / 'rubric.txt'}"]
    done = subprocess.run(sample, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr + vllm_server.log_tail()
    assert "9 samples added" in done.stdout
    record = (run / "run.json").read_text()
    assert SECRET not in record and vllm_server.url.removesuffix("/v1") in record  # the sampling engine's URL only
    settings = json.loads(record)["config"]["verifier"]["settings"]
    assert settings["judge_model"] == SERVED_MODEL and settings["judge_rubric"] == SHORT_RUBRIC
    assert settings["rubric"].startswith("custom-") and "judge_url" not in settings

    report = subprocess.run(cli + ["report", str(run), "--out", str(tmp_path / "report")],
                            capture_output=True, text=True, timeout=300, env=env)
    assert report.returncode == 0, report.stderr
    simpleqa = json.loads((tmp_path / "report" / "results.json").read_text())["runs"][0]["simpleqa"]
    parts = simpleqa["correct"]["mean"] + simpleqa["incorrect"]["mean"] + simpleqa["not_attempted"]["mean"]
    assert parts == pytest.approx(1.0) and simpleqa["n_samples"] == 9

    current = subprocess.run(cli + ["reverify", str(run), "--judge-url", vllm_server.url],
                             capture_output=True, text=True, timeout=300, env=env)
    assert current.returncode == 0 and "verdicts already current" in current.stdout, current.stderr
    no_url = subprocess.run(cli + ["reverify", str(run), "--force"], capture_output=True, text=True, timeout=300,
                            env=env)
    assert_one_line_error(no_url, "needs the judge server's URL: --judge-url")
    wrong = subprocess.run(cli + ["sample", "--task", str(tasks), "--engine", "openai", "--model", SERVED_MODEL,
                                  "--out", str(tmp_path / "other"), "--judge-model", SERVED_MODEL],
                           capture_output=True, text=True, timeout=300, env=env)
    assert_one_line_error(wrong, "--judge-engine, --judge-model and --judge-url are for --verifier qa-judge")

