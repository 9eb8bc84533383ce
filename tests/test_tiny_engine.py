"""Tests of the built-in tiny model and its engine (rlbound.engines.tiny).

Most tests use a small randomly initialised model whose weights have a large spread, so that
next-token distributions are peaked and differ between positions (with the default 0.02 init
every log-probability is about -ln(99) and comparisons could not fail). Tests that need samples
ending at EOS use a model trained for a few seconds on a trivial copy task.
"""

from __future__ import annotations

import math

import pytest
import torch

from rlbound.engines.base import SamplingParams, load_engine
from rlbound.engines.tiny import CharTokenizer, KVCache, TinyConfig, TinyEngine, TinyLlama
from rlbound.engines.tiny.checkpoint import load_model, save_model
from rlbound.engines.tiny.tokenizer import DEFAULT_CHARS
from rlbound.errors import RlboundError

SMALL = TinyConfig(d_model=64, n_layers=2, n_heads=4, d_ff=128, max_seq_len=96)
PROMPTS = ["Q: 1+2\nA: ", "Q: ((13*8)+20)*8\nA: ", "Q: 7\nA: "]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def sharp_model(config: TinyConfig = SMALL, seed: int = 0, std: float = 0.25) -> TinyLlama:
    torch.manual_seed(seed)
    model = TinyLlama(config)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, std)
            else:
                p.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_model")
    save_model(sharp_model(), CharTokenizer(), path)
    return path


@pytest.fixture(scope="module")
def engine(model_dir):
    return load_engine("tiny", str(model_dir), batch_size=64, dtype="float32")  # exact checks: float32


@pytest.fixture(scope="module")
def eos_engine():
    """A model trained briefly to answer 'Q: <word>\\nA: ' with '<word>!' then EOS."""
    from rlbound.engines.tiny.train import train_next_token

    words = ["ab", "cd", "xyz", "hello", "q", "tiny", "eos", "abc"]
    examples = [(f"Q: {w}\nA: ", f"{w}!") for w in words]
    cfg = TinyConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64, max_seq_len=48)
    result = train_next_token(cfg, examples, steps=120, batch_size=8, lr=1e-2, warmup=10, seed=0)
    return TinyEngine.from_model(result.model, result.tokenizer, batch_size=16)


# -- tokenizer ---------------------------------------------------------------------------------


def test_tokenizer_round_trip(tmp_path):
    tok = CharTokenizer()
    assert tok.vocab_size == 99 and len(DEFAULT_CHARS) == 96
    text = DEFAULT_CHARS + "Q: ((13*8)+20)*8\nA: 13*8=104\n#### 992"
    ids = tok.encode(text, bos=True, eos=True)
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id and len(ids) == len(text) + 2
    assert min(ids[1:-1]) >= 3 and max(ids) == 98
    assert tok.decode(ids) == text
    assert tok.decode([tok.pad_id, *tok.encode("a b"), tok.eos_id]) == "a b"
    tok.save(tmp_path)
    again = CharTokenizer.load(tmp_path)
    assert again.encode(text) == tok.encode(text)


@pytest.mark.parametrize("text", ["café", "tab\there", "emoji 🙂"])
def test_tokenizer_rejects_unknown_characters(text):
    with pytest.raises(RlboundError, match="not in its vocabulary"):
        CharTokenizer().encode(text)


# -- model and KV cache ------------------------------------------------------------------------


def test_kv_cache_decoding_equals_full_forward():
    """Prefill (left-padded, rows of different lengths) + one-token steps == full forward."""
    model = sharp_model()
    torch.manual_seed(1)
    seq_a = torch.randint(3, 99, (12,))
    seq_b = torch.randint(3, 99, (7,))
    n_prefix_a, n_prefix_b, n_steps = 9, 4, 3
    width = n_prefix_a
    ids = torch.zeros((2, width), dtype=torch.long)
    valid = torch.zeros((2, width), dtype=torch.bool)
    ids[0], valid[0] = seq_a[:n_prefix_a], True
    ids[1, width - n_prefix_b :], valid[1, width - n_prefix_b :] = seq_b[:n_prefix_b], True
    positions = (valid.long().cumsum(1) - 1).clamp(min=0)
    with torch.no_grad():
        full_a = model(seq_a[None])[0]
        full_b = model(seq_b[None])[0]
        cache = KVCache(model.config, 2, width + n_steps)
        logits = model(ids, positions=positions, cache=cache, key_valid=valid)
        assert torch.allclose(logits[0], full_a[:n_prefix_a], atol=1e-4)
        assert torch.allclose(logits[1, width - n_prefix_b :], full_b[:n_prefix_b], atol=1e-4)
        key_valid = torch.cat([valid, torch.ones((2, n_steps), dtype=torch.bool)], dim=1)
        pos = torch.tensor([n_prefix_a, n_prefix_b])
        for s in range(n_steps):
            step_ids = torch.stack([seq_a[n_prefix_a + s], seq_b[n_prefix_b + s]])[:, None]
            step = model(step_ids, positions=pos[:, None], cache=cache, key_valid=key_valid,
                         last_only=True)
            assert torch.allclose(step[0], full_a[n_prefix_a + s], atol=1e-4)
            assert torch.allclose(step[1], full_b[n_prefix_b + s], atol=1e-4)
            pos = pos + 1
    # the comparison can fail: logits differ between positions
    assert (full_a[1:] - full_a[:-1]).abs().max() > 0.5


def test_shared_prefix_cache_equals_full_forward():
    """Rows continuing one cached copy of their prompt (left-padded prompts of two lengths)
    give the logits of a full forward pass over prompt + own tokens."""
    model = sharp_model(seed=2)
    torch.manual_seed(2)
    prompts = [torch.randint(3, 99, (8,)), torch.randint(3, 99, (5,))]
    row_prompt = torch.tensor([0, 1, 0, 1, 1])
    conts = torch.randint(3, 99, (5, 4))  # each row's own tokens
    width = 8
    ids = torch.zeros((2, width), dtype=torch.long)
    valid = torch.zeros((2, width), dtype=torch.bool)
    for p, seq in enumerate(prompts):
        ids[p, width - len(seq):], valid[p, width - len(seq):] = seq, True
    positions = (valid.long().cumsum(1) - 1).clamp(min=0)
    with torch.no_grad():
        prefill = KVCache(model.config, 2, width)
        model(ids, positions=positions, cache=prefill, key_valid=valid)
        cache = KVCache.with_shared_prefix(prefill, valid, row_prompt, capacity=4)
        pos = torch.tensor([len(prompts[p]) for p in row_prompt.tolist()])
        steps = [model(conts[:, s:s + 1], positions=(pos + s)[:, None], cache=cache,
                       last_only=True) for s in range(2)]
        cache.select_rows(torch.tensor([4, 0, 3]))  # finished rows dropped: rows keep their prompt
        rest = [model(conts[[4, 0, 3], s:s + 1], positions=(pos[[4, 0, 3]] + s)[:, None],
                      cache=cache, last_only=True) for s in range(2, 4)]
        for r in range(5):
            full = model(torch.cat([prompts[row_prompt[r]], conts[r]])[None])[0]
            n = len(prompts[row_prompt[r]])
            for s in range(2):
                assert torch.allclose(steps[s][r], full[n + s], atol=1e-4)
            if r in (4, 0, 3):
                i = [4, 0, 3].index(r)
                for s in range(2, 4):
                    assert torch.allclose(rest[s - 2][i], full[n + s], atol=1e-4)


def test_positions_beyond_max_seq_len_are_refused():
    model = sharp_model()
    with pytest.raises(RlboundError, match="max_seq_len"):
        model(torch.zeros((1, SMALL.max_seq_len + 1), dtype=torch.long))


# -- generate ----------------------------------------------------------------------------------


def _same(a, b, tol=1e-4):
    assert a.token_ids == b.token_ids and a.text == b.text and a.finish_reason == b.finish_reason
    assert max((abs(x - y) for x, y in zip(a.token_logprobs, b.token_logprobs)), default=0) <= tol


@pytest.mark.parametrize("decode, shared_prefix_max", [("eager", 0), ("eager", 8), ("eager", 1000), ("auto", 8)])
def test_independent_of_batch_composition(model_dir, monkeypatch, decode, shared_prefix_max):
    """Eager decoding with per-row prompt copies (0), the default, and always a shared prefix
    (1000); fused decoding (where it builds), which always shares."""
    import rlbound.engines.tiny.engine as engine_module

    monkeypatch.setattr(engine_module, "SHARED_PREFIX_MAX_PROMPTS", shared_prefix_max)
    engine = load_engine("tiny", str(model_dir), batch_size=64, dtype="float32", decode=decode)
    params = SamplingParams(temperature=1.0, max_tokens=24)
    alone = engine.generate([PROMPTS[1]], params, [[11, 12, 13]])[0]
    mixed = engine.generate(PROMPTS, params, [[5, 6], [99, 12, 11, 13], [7]])
    for got, want in zip([mixed[1][2], mixed[1][1], mixed[1][3]], alone):
        _same(got, want)
    small = load_engine("tiny", str(model_dir), batch_size=3, dtype="float32", decode=decode)  # samples span batches
    spread = small.generate(PROMPTS, params, [[5], [11, 12, 13], [7, 8]])
    for got, want in zip(spread[1], alone):
        _same(got, want)
    _same(spread[0][0], mixed[0][0])
    _same(spread[2][0], mixed[2][0])
    # different seeds give different samples (the test above can fail)
    assert len({s.text for s in alone}) == 3
    # many distinct prompts in one batch (per-row prompt copies by default)
    many = [f"Q: {'9' * i}+{i}\nA: " for i in range(12)]
    together = engine.generate(many, params, [[100 + i] for i in range(12)])
    for i in (0, 5, 11):
        _same(together[i][0], engine.generate([many[i]], params, [[100 + i]])[0][0])


def test_output_shape_and_statistics(engine):
    params = SamplingParams(temperature=0.8, top_k=20, max_tokens=10)
    out = engine.generate(PROMPTS, params, [[1, 2], [], [3]])
    assert [len(x) for x in out] == [2, 0, 1]
    s = out[0][0]
    assert len(s.token_ids) == len(s.token_logprobs) == len(s.token_entropies) <= 10
    assert all(lp <= 0 for lp in s.token_logprobs)
    assert all(0 <= e <= math.log(99) + 1e-5 for e in s.token_entropies)


def test_greedy_ignores_seed(engine):
    params = SamplingParams(temperature=0.0, max_tokens=15)
    a, b = engine.generate([PROMPTS[0]], params, [[1, 2]])[0]
    _same(a, b)


def test_max_tokens_gives_length(engine):
    out = engine.generate([PROMPTS[0]], SamplingParams(max_tokens=7), [list(range(8))])[0]
    for s in out:
        if s.finish_reason == "length":
            assert len(s.token_ids) == 7
        else:  # stopped at EOS earlier
            assert s.token_ids[-1] == 2 and len(s.token_ids) <= 7
    assert any(s.finish_reason == "length" for s in out)


def test_never_exceeds_max_seq_len(engine):
    prompt = "Q: " + "1+" * 40 + "\nA: "
    room = SMALL.max_seq_len - (len(prompt) + 1)  # the prompt is BOS + its characters
    out = engine.generate([prompt], SamplingParams(max_tokens=50), [[1, 2, 3]])[0]
    for s in out:
        assert len(s.token_ids) <= room
        if s.finish_reason == "length":
            assert len(s.token_ids) == room
    with pytest.raises(RlboundError, match="max_seq_len"):
        engine.generate(["x" * 100], SamplingParams(max_tokens=5), [[1]])


def test_stop_strings_cut_text_and_tokens(engine):
    params = SamplingParams(temperature=1.0, max_tokens=30)
    seeds = [[21, 22, 23, 24]]
    plain = engine.generate([PROMPTS[1]], params, seeds)[0]
    ref = next(s for s in plain if len(s.text) >= 8 and s.finish_reason == "length")
    one_char, two_chars = ref.text[4], ref.text[5:7]
    stops = (two_chars, one_char)
    stopped = engine.generate([PROMPTS[1]], SamplingParams(max_tokens=30, stop=stops), seeds)[0]
    for before, after in zip(plain, stopped):
        cuts = [before.text.find(s) for s in stops if s in before.text]
        if not cuts:
            _same(after, before)
            continue
        cut = min(cuts)
        assert after.finish_reason == "stop"
        assert after.text == before.text[:cut]
        assert after.token_ids == before.token_ids[: len(after.token_ids)]
        assert CharTokenizer().decode(after.token_ids) == after.text
        assert len(after.token_logprobs) == len(after.token_ids)
    assert any(a.finish_reason == "stop" and a.text != b.text for a, b in zip(stopped, plain))


def test_eos_ends_with_stop(eos_engine):
    out = eos_engine.generate(["Q: hello\nA: ", "Q: ab\nA: "], SamplingParams(max_tokens=20),
                              [[1, 2, 3], [4]])
    samples = [s for per in out for s in per]
    assert any(s.finish_reason == "stop" for s in samples)
    for s in samples:
        if s.finish_reason == "stop":
            assert s.token_ids[-1] == 2 and 2 not in s.token_ids[:-1]
            assert len(s.token_logprobs) == len(s.token_ids) == len(s.text) + 1
    greedy = eos_engine.generate(["Q: hello\nA: "], SamplingParams(temperature=0, max_tokens=20),
                                 [[0]])
    assert greedy[0][0].text == "hello!" and greedy[0][0].finish_reason == "stop"


def test_deferred_stragglers_give_the_samples_they_would_have_given(eos_engine, monkeypatch):
    """Rows still running when few are left are restarted in a batch of stragglers: the same
    samples as when nothing is deferred (each sample depends only on its seed)."""
    import rlbound.engines.tiny.engine as engine_module

    prompts = ["Q: hello\nA: ", "Q: ab\nA: ", "Q: tiny\nA: "]
    seeds = [list(range(i * 100, i * 100 + 12)) for i in range(3)]
    params = SamplingParams(temperature=1.5, max_tokens=30)
    whole = TinyEngine.from_model(eos_engine.model, eos_engine.tokenizer, batch_size=64)
    reference = whole.generate(prompts, params, seeds)  # one batch: nothing to defer
    deferred = []
    original = TinyEngine._generate_batch

    def spy(self, encoded, chunk, params, defer_at=0):
        samples, late = original(self, encoded, chunk, params, defer_at)
        deferred.append(len(late))
        return samples, late

    monkeypatch.setattr(TinyEngine, "_generate_batch", spy)
    monkeypatch.setattr(engine_module, "DEFER_BELOW", 0.5)
    small = TinyEngine.from_model(eos_engine.model, eos_engine.tokenizer, batch_size=12)
    got = small.generate(prompts, params, seeds)
    assert sum(deferred) > 0  # some rows were restarted (the test can fail)
    lengths = {len(s.token_ids) for per in reference for s in per}
    assert len(lengths) > 3  # samples of different lengths: stragglers exist
    for got_per, want_per in zip(got, reference):
        for a, b in zip(got_per, want_per):
            _same(a, b)


# -- score -------------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_score_matches_generate(engine, eos_engine, temperature):
    params = SamplingParams(temperature=temperature, top_p=0.95, max_tokens=20)
    for eng in (engine, eos_engine):
        out = eng.generate(PROMPTS[:2], params, [[1, 2], [3]])
        pairs = [(p, s) for p, per in zip(PROMPTS, out) for s in per]
        scores = eng.score([p for p, _ in pairs], [s.text for _, s in pairs])
        for (_, s), sc in zip(pairs, scores):
            n = len(s.text)
            assert sc.token_ids == s.token_ids[:n]
            for got, want in ((sc.token_logprobs, s.token_logprobs[:n]),
                              (sc.token_entropies, s.token_entropies[:n])):
                assert torch.allclose(torch.tensor(got), torch.tensor(want), atol=1e-4)


def test_score_edge_cases(engine):
    assert engine.score(["Q: 1\nA: "], [""])[0].token_logprobs == []
    with pytest.raises(RlboundError, match="max_seq_len"):
        engine.score(["Q: "], ["9" * 200])
    with pytest.raises(RlboundError):
        engine.score(["a", "b"], ["c"])


# -- checkpoints, registry ---------------------------------------------------------------------


def test_save_load_round_trip_gives_identical_samples(tmp_path):
    model = sharp_model(seed=3)
    params = SamplingParams(temperature=1.0, max_tokens=16)
    in_memory = TinyEngine.from_model(model, CharTokenizer())
    before = in_memory.generate(PROMPTS, params, [[1], [2], [3]])
    save_model(model, CharTokenizer(), tmp_path / "m")
    loaded, _ = load_model(tmp_path / "m")
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    after = load_engine("tiny", str(tmp_path / "m"), dtype="float32").generate(PROMPTS, params, [[1], [2], [3]])
    for x, y in zip(before, after):
        _same(x[0], y[0], tol=0.0)


def test_load_engine_and_info(model_dir):
    eng = load_engine("tiny", str(model_dir))
    assert isinstance(eng, TinyEngine)
    info = eng.info()
    assert info.engine == "tiny" and info.model == str(model_dir)
    assert len(info.details["weights_sha256"]) == 16
    assert info.details["parameters"] == sharp_model().num_parameters()
    assert info.details["config"]["d_model"] == 64


def test_bad_model_dirs_and_options(tmp_path, model_dir):
    with pytest.raises(RlboundError, match="does not exist"):
        load_engine("tiny", str(tmp_path / "missing"))
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(RlboundError, match="not a tiny model"):
        load_engine("tiny", str(tmp_path / "hf"))
    with pytest.raises(RlboundError, match=r"engine 'tiny' has no option 'temperatur' \(it accepts: batch_size, decode, device, dtype\)"):
        load_engine("tiny", str(model_dir), temperatur=1.0)
    eng = load_engine("tiny", str(model_dir))
    with pytest.raises(RlboundError, match="not in its vocabulary"):
        eng.generate(["Q: 3×4\nA: "], SamplingParams(max_tokens=4), [[1]])
    with pytest.raises(RlboundError, match="seed lists"):
        eng.generate(["a", "b"], SamplingParams(max_tokens=4), [[1]])
    assert eng.generate([], SamplingParams(max_tokens=4), []) == []


# -- export ------------------------------------------------------------------------------------


@pytest.mark.parametrize("tie", [False, True])
def test_export_to_hf_llama_matches_logits(tmp_path, tie):
    pytest.importorskip("transformers")
    from transformers import AutoTokenizer, LlamaForCausalLM

    from rlbound.engines.tiny.export import export_hf

    cfg = TinyConfig(d_model=64, n_layers=2, n_heads=4, d_ff=96, max_seq_len=64,
                     rope_theta=500.0, tie_embeddings=tie)
    model = sharp_model(cfg, seed=5)
    out = export_hf(model, tmp_path / "hf", CharTokenizer())
    hf = LlamaForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    ids = torch.randint(0, 99, (3, 50), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, theirs = model(ids), hf(ids).logits
    assert ours.abs().max() > 1.0  # logits are far from uniform, so the check can fail
    assert (ours - theirs).abs().max() < 1e-4
    text = "Q: ((13*8)+20)*8\nA: 13*8=104"
    hf_tok = AutoTokenizer.from_pretrained(str(out))
    assert hf_tok(text)["input_ids"] == CharTokenizer().encode(text, bos=True)


@pytest.mark.slow
def test_export_hf_command_gives_a_model_with_the_tiny_engines_greedy_tokens(tmp_path, model_dir, engine):
    pytest.importorskip("transformers")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.test_cli import rlbound

    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "notes.txt").write_text("mine")  # --force writes beside it, leaves it
    result = rlbound("export-hf", model_dir, tmp_path / "hf", "--force")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "hf" / "notes.txt").read_text() == "mine"
    assert result.stdout.startswith(f"{tmp_path / 'hf'}: LlamaForCausalLM, 2 layers")
    assert "model.safetensors" in result.stdout and "tokenizer.json" in result.stdout
    hf = AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf"), dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    prompt = PROMPTS[1]
    ids = tok(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=40, do_sample=False)
    ours = engine.generate([prompt], SamplingParams(temperature=0.0, max_tokens=40), [[0]])[0][0]
    theirs = out[0, ids.shape[1]:].tolist()
    assert len(set(theirs)) > 3  # a varied continuation, so the comparison can fail
    assert theirs == ours.token_ids
    assert tok.decode(theirs, skip_special_tokens=True) == ours.text
