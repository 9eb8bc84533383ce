"""The tiny engine's fused decoding kernels (rlbound.engines.tiny.kernels): each kernel against the
torch operations it replaces, a decoding step against the model's ordinary forward in every cache
layout (one shared prompt, several, a copied prompt per row with padding), at head sizes with and
without a fast path; the engine's samples against its eager mode; and the option's errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rlbound.engines.base import SamplingParams
from rlbound.engines.tiny import CharTokenizer, TinyEngine, TinyLlama
from rlbound.engines.tiny.kernels import fused_kernels, resolve_decode
from rlbound.engines.tiny.model import KVCache, TinyConfig
from rlbound.errors import RlboundError

FORMATS = [torch.float32, torch.bfloat16]


@pytest.fixture(scope="module")
def kernels():
    return fused_kernels()  # builds on first use; a machine without a compiler fails here, saying why


@pytest.mark.parametrize("dtype", FORMATS)
@pytest.mark.parametrize("width", [128, 40])  # 40: a tail shorter than 16 lanes
def test_rms_norm_and_silu_mul_match_torch(kernels, dtype, width):
    torch.manual_seed(0)
    x = torch.randn(37, width).to(dtype)
    w = (1 + 0.1 * torch.randn(width)).to(dtype)
    tol = 1e-5 if dtype is torch.float32 else 1e-2
    want = F.rms_norm(x.float(), (width,), w.float(), 1e-6)
    torch.testing.assert_close(kernels.rms_norm(x, w, 1e-6).float(), want, atol=tol, rtol=tol)
    gate_up = torch.randn(37, 2 * width).to(dtype)
    gate, up = gate_up.split(width, dim=-1)
    torch.testing.assert_close(kernels.silu_mul(gate_up).float(), (F.silu(gate) * up).float(), atol=tol, rtol=tol)


def _caches(model, prompts, n_rows, decode_dtype, shared):
    """The prefill and the decoding cache the engine builds for ``n_rows`` rows over ``prompts``
    (left-padded token lists), rows assigned to prompts round-robin."""
    width = max(map(len, prompts))
    ids = torch.zeros((len(prompts), width), dtype=torch.long)
    valid = torch.zeros((len(prompts), width), dtype=torch.bool)
    for p, toks in enumerate(prompts):
        ids[p, width - len(toks):] = torch.tensor(toks)
        valid[p, width - len(toks):] = True
    positions = (valid.long().cumsum(1) - 1).clamp_(min=0)
    prefill = KVCache(model.config, len(prompts), width, dtype=torch.float32)
    logits = model(ids, positions=positions, cache=prefill, key_valid=valid, last_only=True)
    row_prompt = torch.arange(n_rows) % len(prompts)
    steps = 6
    if shared:
        cache = KVCache.with_shared_prefix(prefill, valid, row_prompt, steps, decode_dtype)
        key_valid = None
    else:
        cache = prefill.expanded(row_prompt, width + steps, decode_dtype)
        key_valid = torch.ones((n_rows, width + steps), dtype=torch.bool)
        key_valid[:, :width] = valid[row_prompt]
    lens = torch.tensor([len(p) for p in prompts])[row_prompt]
    return logits[row_prompt], cache, key_valid, lens


# (format, kernels, (d_model, heads)): head sizes 32 (the attention's fast path) and 24 (masked
# tail); the whole-layer kernel (bfloat16, AVX512-BF16) needs d_model a multiple of 64
STEP_CASES = [(dtype, "per layer", shape) for dtype in FORMATS for shape in [(64, 2), (48, 2)]]
STEP_CASES.append((torch.bfloat16, "whole layers", (64, 2)))


@pytest.mark.parametrize("dtype, kernel, shape", STEP_CASES)
@pytest.mark.parametrize("layout", ["one shared prompt", "shared padded prompts", "copied prompts"])
def test_a_fused_decoding_step_computes_what_the_model_does(kernels, dtype, kernel, shape, layout):
    torch.manual_seed(1)
    d_model, heads = shape
    if kernel == "whole layers" and not kernels.bf16_dot_available():
        pytest.skip("no AVX512-BF16 on this CPU")
    model = TinyLlama(TinyConfig(d_model=d_model, n_heads=heads, n_layers=2, d_ff=96, max_seq_len=64)).to(dtype).eval()
    tables = model.decode_tables(kernels if kernel == "whole layers" else None)
    assert (tables.layers is not None) == (kernel == "whole layers")
    prompts = {"one shared prompt": [[1, 5, 9, 13]],
               "shared padded prompts": [[1, 5, 9], [1, 7, 7, 7, 2, 3], [1, 4]],
               "copied prompts": [[1, 5, 9], [1, 7, 7, 7, 2, 3], [1, 4]]}[layout]
    shared = layout != "copied prompts"
    with torch.inference_mode():
        rows = 21  # the whole-layer kernel: a block of 16 rows and one of 5 (row tiles of 4 and 1)
        _, eager_cache, eager_valid, pos = _caches(model, prompts, rows, torch.float32, shared)
        _, fused_cache, fused_valid, _ = _caches(model, prompts, rows, dtype, shared)
        token = torch.arange(rows) % 20 + 3
        worst = 0.0
        for _ in range(5):  # several steps: each reads the columns the earlier ones wrote
            want = model(token[:, None], positions=pos[:, None], cache=eager_cache, key_valid=eager_valid, last_only=True)
            got = model.decode_step(token, pos, fused_cache, fused_valid, kernels, tables)
            worst = max(worst, float((got - want).abs().max() / want.abs().max()))
            token, pos = want.argmax(-1), pos + 1
    assert fused_cache.length == eager_cache.length
    assert worst < (1e-5 if dtype is torch.float32 else 3e-2), worst


@pytest.mark.parametrize("rows", [1, 3, 16, 37])
def test_packed_linear_matches_a_float32_matmul(kernels, rows):
    """The whole-layer kernel's matmul (AVX512-BF16 dot products over packed weights) against
    float32 products of the same bfloat16 numbers, at row counts with every tile tail."""
    if not kernels.bf16_dot_available():
        pytest.skip("no AVX512-BF16 on this CPU")
    from rlbound.engines.tiny.model import PackedLayers

    torch.manual_seed(2)
    for n, k in [(128, 128), (384, 128), (64, 96)]:
        a, w = torch.randn(rows, k).bfloat16(), torch.randn(n, k).bfloat16()
        got = kernels.packed_linear(a, PackedLayers.pack(w))
        torch.testing.assert_close(got, a.float() @ w.float().t(), atol=1e-4, rtol=1e-5)
    with pytest.raises(RuntimeError, match="n a multiple of 64"):
        kernels.packed_linear(a, PackedLayers.pack(torch.randn(48, k).bfloat16()))


def test_packed_layers_are_kept_until_a_weight_changes(kernels):
    if not kernels.bf16_dot_available():
        pytest.skip("no AVX512-BF16 on this CPU")
    from rlbound.engines.tiny.model import PackedLayers

    model = TinyLlama(TinyConfig(d_model=64, n_heads=2, n_layers=2, d_ff=96, max_seq_len=64)).to(torch.bfloat16)
    first = model.decode_tables(kernels).layers
    assert model.decode_tables(kernels).layers is first  # not packed again per batch
    with torch.no_grad():
        model.layers[1].o.weight.mul_(2)  # what an optimiser step does: in place
    again = model.decode_tables(kernels).layers
    assert again is not first and torch.equal(again.o[1], PackedLayers.pack(model.layers[1].o.weight))
    assert model.decode_tables(None).layers is None and model.float().decode_tables(kernels).layers is None


@pytest.fixture(scope="module")
def trained_tiny(exported_arithmetic_model):
    from rlbound.engines.tiny import load_model

    return load_model(exported_arithmetic_model["tiny"])


@pytest.mark.parametrize("dtype", FORMATS)
@pytest.mark.parametrize("n_prompts", [4, 10])  # 10: more than an eager batch shares (it copies; fused shares)
def test_fused_and_eager_engines_sample_alike(trained_tiny, dtype, n_prompts):
    model, tok = trained_tiny
    model = model.to(dtype)
    prompts = [f"Q: {3 + 7 * i}+{i % 9}\nA: " for i in range(n_prompts)]
    params = SamplingParams(temperature=1.0, max_tokens=16)
    per = 50 if n_prompts == 4 else 10  # 10 prompts x 10 samples: one batch of 100 rows
    seeds = [list(range(i * 50, i * 50 + per)) for i in range(n_prompts)]
    out = {mode: TinyEngine.from_model(model, tok, batch_size=128, decode=mode).generate(prompts, params, seeds)
           for mode in ("eager", "fused")}
    again = TinyEngine.from_model(model, tok, batch_size=64, decode="fused").generate(prompts, params, seeds)
    pairs = [(a, b) for ra, rb in zip(out["eager"], out["fused"]) for a, b in zip(ra, rb)]
    same = sum(a.text == b.text for a, b in pairs)
    print(f"{dtype}: fused and eager samples equal for {same} of {len(pairs)}")
    if n_prompts == 4:  # a sample reproduces per seed whatever else is in its batch (another batch size)
        assert [s.text for row in again for s in row] == [s.text for row in out["fused"] for s in row]
    if dtype is torch.float32:
        assert same == len(pairs)
        worst = max(abs(x - y) for a, b in pairs for x, y in zip(a.token_logprobs, b.token_logprobs))
        assert worst < 1e-4, worst
    else:  # rounding moves an inverse-CDF draw to a neighbouring token now and then
        assert same >= 0.7 * len(pairs)
    details = TinyEngine.from_model(model, tok, decode="fused").info().details
    assert details["decode"] == "fused"
    whole = dtype is torch.bfloat16 and fused_kernels().bf16_dot_available()
    assert details["decode_kernels"] == ("whole layers" if whole else "per layer")


def test_decode_modes_are_checked(trained_tiny):
    with pytest.raises(RlboundError, match=r"decode must be one of auto, fused, eager, got 'fast'"):
        resolve_decode("fast", torch.device("cpu"))
    with pytest.raises(RlboundError, match=r"decode=fused runs on the CPU only"):
        resolve_decode("fused", torch.device("meta"))
    assert resolve_decode("auto", torch.device("meta")) == "eager"
    assert resolve_decode("eager", torch.device("cpu")) == "eager"
    assert resolve_decode("auto", torch.device("cpu")) == "fused"  # this machine builds them
    model, tok = trained_tiny
    assert TinyEngine.from_model(model, CharTokenizer(), decode="eager").info().details["decode"] == "eager"


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_fused_sampling_draws_what_sample_next_draws(kernels, temperature):
    import numpy as np

    from rlbound.engines.sampling import premixed_seeds, row_uniforms, sample_next

    torch.manual_seed(2)
    logits = torch.randn(3000, 99) * 3
    logits[:5, 10:] = float("-inf")  # rows whose support is a few tokens
    seeds = np.arange(3000, dtype=np.uint64) * 7919
    seeds[::2] |= np.uint64(1 << 63)  # seeds beyond int64: the kernel reads their bits as int64
    want = sample_next(logits, SamplingParams(temperature=temperature), seeds, 4)
    uniforms = torch.from_numpy(row_uniforms(seeds, 4))
    premixed = torch.from_numpy(premixed_seeds(seeds).view(np.int64))
    assert torch.equal(kernels.step_uniforms(premixed, 4), uniforms)  # the hash's second half, bit for bit
    assert not torch.equal(kernels.step_uniforms(premixed, 5), uniforms)
    tokens, logprobs, entropies = kernels.sample_rows(logits, uniforms, temperature)
    assert torch.equal(tokens, want.tokens)
    assert bool((tokens[:5] < 10).all())
    torch.testing.assert_close(logprobs, want.logprobs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(entropies, want.entropies, atol=1e-5, rtol=1e-5)
