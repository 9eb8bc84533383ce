"""Tests of rlbound.train.algorithms and rlbound.train.sequences against hand-computed values.

Every expected number below is worked out by hand in the comment beside it (toy batches of a
few samples), so a wrong sign, a wrong std convention or a wrong normaliser fails the test.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from rlbound.errors import RlboundError
from rlbound.train.algorithms import (
    ALGORITHMS,
    Algorithm,
    OverlongShaping,
    aggregate,
    algorithm_at,
    compute_advantages,
    discounted_returns,
    dsrl_phase,
    dynamic_sampling_keep,
    gae_advantages,
    get_algorithm,
    kl_estimate,
    masked_whiten,
    overlong_shaping,
    policy_loss,
    reinforce_pp_advantages,
    sequence_advantages,
    shape_rewards,
    token_advantages,
    value_loss,
)
from rlbound.train.sequences import gather_logprobs, policy_inputs, token_entropy

pytestmark = pytest.mark.usefixtures("one_torch_thread")

A = ALGORITHMS
R4 = [1.0, 0.0, 0.0, 1.0]
G4 = [0, 0, 0, 0]


def close(x, expected, tol=1e-5):
    np.testing.assert_allclose(np.asarray(x, dtype=float), np.asarray(expected, dtype=float),
                               atol=tol, rtol=0)


# -- registry ----------------------------------------------------------------------------------


def test_registry_has_every_algorithm_with_its_paper():
    expected = {"ppo", "grpo", "dr_grpo", "rloo", "reinforce_pp", "remax", "dapo", "psr", "nsr",
                "w_reinforce", "prerl", "nsr_prerl", "psr_prerl"}
    assert set(A) == expected
    for name, algo in A.items():
        assert algo.name == name and len(algo.reference) > 30
    assert A["dapo"].clip_low == 0.2 and A["dapo"].clip_high == 0.28
    assert A["dapo"].sample_filter == "dynamic" and A["dapo"].aggregation == "token_mean"
    assert A["ppo"].value_head and not A["grpo"].value_head
    assert A["remax"].needs_greedy and not A["rloo"].needs_greedy
    assert all(A[n].conditioning == "response_only" for n in ("prerl", "nsr_prerl", "psr_prerl"))
    assert all(a.kl_coef == 0 for n, a in A.items() if n != "reinforce_pp")
    assert A["reinforce_pp"].kl_in_reward and A["reinforce_pp"].kl_coef > 0


def test_unknown_names_and_bad_fields_are_user_errors():
    with pytest.raises(RlboundError, match="unknown algorithm 'grpoo'.*grpo"):
        get_algorithm("grpoo")
    with pytest.raises(RlboundError, match="schedule"):
        get_algorithm("dsrl")
    with pytest.raises(RlboundError, match="aggregation"):
        replace(A["grpo"], aggregation="mean")
    with pytest.raises(RlboundError, match="clip_low"):
        Algorithm("x", clip_low=1.5)
    assert replace(A["grpo"], kl_coef=0.04).needs_reference


def test_dsrl_switches_from_nsr_prerl_to_grpo():
    early, late = dsrl_phase(4, 5), dsrl_phase(5, 5)
    assert early.conditioning == "response_only" and early.sample_filter == "wrong_only"
    assert early.name == "dsrl/nsr_prerl"
    assert late.conditioning == "prompt" and late.advantage == "grpo" and late.name == "dsrl/grpo"
    assert algorithm_at("dsrl", 0, 3).name == "dsrl/nsr_prerl"
    assert algorithm_at("grpo", 7) is A["grpo"]
    with pytest.raises(RlboundError, match="switch step"):
        algorithm_at("dsrl", 0)


# -- outcome-level advantages ------------------------------------------------------------------


def test_grpo_uses_sample_std_within_each_group():
    # group [1,0,0,1]: mean 0.5, sample std sqrt(4 * 0.25 / 3) = 0.57735 -> +-0.5/0.57735
    # group [1,1,1,0]: mean 0.75, deviations .25,.25,.25,-.75, sample var 0.75/3 -> std 0.5
    adv, keep = sequence_advantages(A["grpo"], R4 + [1, 1, 1, 0], [0] * 4 + [1] * 4)
    s = 0.5 / math.sqrt(1 / 3)
    close(adv, [s, -s, -s, s, 0.5, 0.5, 0.5, -1.5], tol=1e-4)
    assert keep.all()


def test_grpo_constant_group_and_singleton_give_zero():
    adv, _ = sequence_advantages(A["grpo"], [1, 1, 0.3], [0, 0, 1])
    close(adv, [0, 0, 0])


def test_dr_grpo_and_group_mean_are_centred_only():
    adv, _ = sequence_advantages(A["dr_grpo"], R4 + [1, 1, 1, 0], [0] * 4 + [1] * 4)
    close(adv, [0.5, -0.5, -0.5, 0.5, 0.25, 0.25, 0.25, -0.75])
    adv2, _ = sequence_advantages(A["prerl"], R4 + [1, 1, 1, 0], [0] * 4 + [1] * 4)
    close(adv2, adv)


def test_rloo_leave_one_out_baseline():
    # [1,0,0,1]: 1 - 1/3 = 2/3, 0 - 2/3 = -2/3; [1,1,1,0]: 1 - 2/3 = 1/3, 0 - 1 = -1
    # groups interleaved to check grouping is by id, not by position
    adv, _ = sequence_advantages(A["rloo"], [1, 1, 0, 1, 0, 1, 1, 0], [0, 1, 0, 1, 0, 1, 0, 1])
    close(adv, [2 / 3, 1 / 3, -2 / 3, 1 / 3, -2 / 3, 1 / 3, 2 / 3, -1])


def test_remax_subtracts_the_greedy_reward():
    adv, _ = sequence_advantages(A["remax"], R4, G4, greedy_rewards=[1, 1, 0, 0])
    close(adv, [0, -1, 0, 1])
    with pytest.raises(ValueError, match="greedy"):
        sequence_advantages(A["remax"], R4, G4)


def test_psr_nsr_w_reinforce():
    adv, keep = sequence_advantages(A["psr"], R4, G4)
    close(adv, [1, 0, 0, 1])
    assert keep.tolist() == [True, False, False, True]
    adv, keep = sequence_advantages(A["nsr"], R4, G4)
    close(adv, [0, -1, -1, 0])
    assert keep.tolist() == [False, True, True, False]
    adv, keep = sequence_advantages(A["w_reinforce"], R4, G4)
    close(adv, [0.1, -1, -1, 0.1])
    assert keep.all()
    # correctness given explicitly (e.g. a spurious reward): the filter follows `correct`
    adv, keep = sequence_advantages(A["nsr"], [0.5, 0.5], [0, 0], correct=[True, False])
    assert keep.tolist() == [False, True]


def test_prerl_filters():
    # [1,0,0,0]: mean 0.25 -> correct +0.75, wrong -0.25
    adv, keep = sequence_advantages(A["nsr_prerl"], [1, 0, 0, 0], G4)
    close(adv, [0, -0.25, -0.25, -0.25])
    assert keep.tolist() == [False, True, True, True]
    adv, keep = sequence_advantages(A["psr_prerl"], [1, 0, 0, 0], G4)
    close(adv, [0.75, 0, 0, 0])
    assert keep.tolist() == [True, False, False, False]


def test_dapo_dynamic_sampling_drops_all_correct_and_all_wrong_groups():
    groups = [0, 0, 1, 1, 2, 2, 3, 3, 3]
    correct = [1, 0, 1, 1, 0, 0, 0, 1, 1]
    keep = dynamic_sampling_keep(groups, correct)
    assert keep.tolist() == [True, True, False, False, False, False, True, True, True]
    adv, keep2 = sequence_advantages(A["dapo"], correct, groups)
    assert keep2.tolist() == keep.tolist()
    close(adv[2:6], [0, 0, 0, 0])
    # group 0 [1,0]: sample std sqrt(0.5) -> +-0.5/0.7071
    close(adv[:2], [0.70711, -0.70711], tol=1e-4)


# -- token-level advantages --------------------------------------------------------------------


def test_gae_against_hand_computation():
    # response in columns 1..3: r = [0,0,1], V = [.5,.6,.7], gamma 1, lambda .9
    # delta = [.6-.5, .7-.6, 1-.7] = [.1,.1,.3]; A2 = .3, A1 = .1+.9*.3 = .37, A0 = .1+.9*.37
    mask = torch.tensor([[0, 1, 1, 1, 0]], dtype=torch.bool)
    rewards = torch.tensor([[0.0, 0, 0, 1, 0]])
    values = torch.tensor([[9.0, 0.5, 0.6, 0.7, 9.0]])
    adv, ret = gae_advantages(rewards, values, mask, gamma=1.0, lam=0.9)
    close(adv, [[0, 0.433, 0.37, 0.3, 0]])
    close(ret, [[0, 0.933, 0.97, 1.0, 0]])
    # gamma .9, lambda 1: A_t = G_t - V_t with G = [.81, .9, 1]
    adv, _ = gae_advantages(rewards, values, mask, gamma=0.9, lam=1.0)
    close(adv, [[0, 0.31, 0.3, 0.3, 0]])


def test_ppo_compute_advantages_puts_reward_on_last_token_and_whitens():
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    values = torch.tensor([[0.2, 0.4, 0.6, 0.0], [0.1, 0.3, 0.0, 0.0]])
    out = compute_advantages(A["ppo"], [1.0, 0.0], [0, 0], mask, values=values)
    token_r = torch.tensor([[0, 0, 1.0, 0], [0, 0, 0, 0]])
    raw, ret = gae_advantages(token_r, values, mask, 1.0, 0.95)
    close(out.returns, ret)
    close(out.advantages, masked_whiten(raw, mask))
    vals = out.advantages[mask]
    assert abs(float(vals.mean())) < 1e-6 and abs(float(vals.std(unbiased=False)) - 1) < 1e-3


def test_reinforce_pp_returns_and_batch_normalisation():
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    # no KL: returns [1,1,1] and [0,0]; mean .6, population var .24
    adv, ret = reinforce_pp_advantages([1.0, 0.0], mask)
    close(ret, [[1, 1, 1, 0], [0, 0, 0, 0]])
    close(adv, [[0.4 / math.sqrt(0.24)] * 3 + [0], [-0.6 / math.sqrt(0.24)] * 2 + [0, 0]])
    # KL 0.1 * k1 folded into rewards: row0 r = [-.05,-.02,1-.01], row1 [-.03,-.04]
    kl = torch.tensor([[0.5, 0.2, 0.1, 7.0], [0.3, 0.4, 7.0, 7.0]])
    adv, ret = reinforce_pp_advantages([1.0, 0.0], mask, kl, kl_coef=0.1)
    close(ret, [[0.92, 0.97, 0.99, 0], [-0.07, -0.04, 0, 0]])
    g = np.array([0.92, 0.97, 0.99, -0.07, -0.04])
    close(adv[mask], (g - g.mean()) / g.std())
    # through compute_advantages, with the algorithm's beta and k1 of old vs reference
    algo = replace(A["reinforce_pp"], kl_coef=0.1)
    out = compute_advantages(algo, [1.0, 0.0], [0, 0], mask, kl=kl)
    close(out.advantages, adv)


def test_discounted_returns_discount():
    r = torch.tensor([[1.0, 0.0, 2.0]])
    close(discounted_returns(r, torch.ones(1, 3, dtype=torch.bool), 0.5), [[1.5, 1.0, 2.0]])


def test_compute_advantages_broadcasts_outcome_estimators_on_the_mask():
    mask = torch.tensor([[0, 1, 1], [1, 0, 0]], dtype=torch.bool)
    out = compute_advantages(A["dr_grpo"], [1.0, 0.0], [3, 3], mask)
    close(out.advantages, [[0, 0.5, 0.5], [-0.5, 0, 0]])
    assert out.returns is None and out.keep.all()


# -- overlong shaping --------------------------------------------------------------------------


def test_overlong_shaping_values():
    # L_max 20, L_cache 5: no penalty up to 15, linear to -1 at 20, -1 beyond
    close(overlong_shaping([10, 15, 16, 18, 20, 25], 20, 5), [0, 0, -0.2, -0.6, -1, -1])
    close(overlong_shaping([18], 20, 5, penalty=0.5), [-0.3])
    # DAPO default: cache = 20 % of max_tokens 20 -> 4, start 16; L 18 -> -0.5
    close(shape_rewards(A["dapo"], [1.0, 1.0], [10, 18], max_tokens=20), [1.0, 0.5])
    close(shape_rewards(A["grpo"], [1.0, 1.0], [10, 18], max_tokens=20), [1.0, 1.0])
    assert OverlongShaping(max_len=100, cache_len=10).resolve(None) == (100, 10)
    with pytest.raises(RlboundError):
        OverlongShaping().resolve(None)


# -- losses ------------------------------------------------------------------------------------


def test_kl_estimators():
    logp, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    ln2 = math.log(2)
    close(kl_estimate(logp, ref, "k1"), [ln2])
    close(kl_estimate(logp, ref, "k2"), [0.5 * ln2 ** 2])
    close(kl_estimate(logp, ref, "k3"), [0.5 - 1 + ln2])  # ref/p - 1 - log(ref/p)
    close(kl_estimate(ref, ref, "k3"), [0.0])


def test_clipped_surrogate_with_asymmetric_bounds():
    # old_logp 0, so ratio = exp(logp). Tokens (ratio, A):
    # (1.5,+1) clipped to 1.28 -> -1.28, no grad | (1.25,+1) inside 1.28 -> -1.25
    # (0.7,-1) clipped to 0.8 -> 0.8, no grad    | (0.7,+1) -> -0.7 | (1.5,-1) -> 1.5
    ratio = torch.tensor([[1.5, 1.25, 0.7, 0.7, 1.5]])
    adv = torch.tensor([[1.0, 1.0, -1.0, 1.0, -1.0]])
    logp = ratio.log().requires_grad_(True)
    mask = torch.ones(1, 5, dtype=torch.bool)
    loss, m = policy_loss(A["dapo"], logp, torch.zeros(1, 5), adv, mask)
    close(loss.item(), (-1.28 - 1.25 + 0.8 - 0.7 + 1.5) / 5)
    assert m["clip_fraction"] == pytest.approx(0.4)
    assert m["clip_fraction_high"] == pytest.approx(0.2)
    assert m["clip_fraction_low"] == pytest.approx(0.2)
    loss.backward()
    close(logp.grad, [[0, -1.25 / 5, 0, -0.7 / 5, 1.5 / 5]])
    # symmetric 0.2 clipping also clips the second token (1.25 > 1.2)
    loss_sym, m_sym = policy_loss(A["grpo"], ratio.log(), torch.zeros(1, 5), adv, mask)
    close(loss_sym.item(), (-1.2 - 1.2 + 0.8 - 0.7 + 1.5) / 5)
    assert m_sym["clip_fraction"] == pytest.approx(0.6)


def test_three_aggregations_on_rows_of_different_lengths():
    loss = torch.tensor([[1.0, 2, 3, 0, 0], [4, 0, 0, 0, 0], [9, 9, 9, 9, 9]])
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)
    close(aggregate(loss, mask, "token_mean"), 10 / 4)
    close(aggregate(loss, mask, "seq_mean_token_mean"), (2 + 4) / 2)
    close(aggregate(loss, mask, "seq_mean_token_sum_norm", max_len=4), (6 / 4 + 4 / 4) / 2)
    close(aggregate(loss, mask, "seq_mean_token_sum_norm"), (6 / 5 + 4 / 5) / 2)
    empty = aggregate(loss, torch.zeros_like(mask), "seq_mean_token_mean")
    assert float(empty) == 0.0


def test_policy_loss_aggregation_follows_the_algorithm():
    # ratio 1, so the per-token loss is -A: row0 A = 1 on 3 tokens, row1 A = -1 on 1 token
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]], dtype=torch.bool)
    adv = torch.tensor([1.0, -1.0])
    zeros = torch.zeros(2, 4)
    assert policy_loss(A["dapo"], zeros, zeros, adv, mask)[0].item() == pytest.approx(-2 / 4)
    assert policy_loss(A["grpo"], zeros, zeros, adv, mask)[0].item() == pytest.approx(0.0)
    loss, _ = policy_loss(A["dr_grpo"], zeros, zeros, adv, mask, max_len=8)
    assert loss.item() == pytest.approx((-3 / 8 + 1 / 8) / 2)


def test_kl_and_entropy_terms():
    mask = torch.ones(1, 2, dtype=torch.bool)
    logp = torch.full((1, 2), math.log(0.5))
    ref = torch.full((1, 2), math.log(0.25))
    zero_adv = torch.zeros(1, 2)
    algo = replace(A["grpo"], kl_coef=0.1)
    loss, m = policy_loss(algo, logp, logp, zero_adv, mask, ref_logp=ref)
    close(loss.item(), 0.1 * (0.5 - 1 + math.log(2)))
    close(m["kl"], 0.5 - 1 + math.log(2))
    with pytest.raises(ValueError, match="ref_logp"):
        policy_loss(algo, logp, logp, zero_adv, mask)
    # REINFORCE++ keeps its KL in the reward: no loss term
    loss, _ = policy_loss(A["reinforce_pp"], logp, logp, zero_adv, mask, ref_logp=ref)
    assert loss.item() == 0.0
    ent = torch.full((1, 2), 2.0)
    loss, m = policy_loss(replace(A["grpo"], entropy_coef=0.01), logp, logp, zero_adv, mask,
                          entropy=ent)
    close(loss.item(), -0.02)
    assert m["entropy"] == pytest.approx(2.0)


def test_value_loss_plain_and_clipped():
    v, R, old = torch.tensor([[1.0, 2.0]]), torch.tensor([[1.5, 1.0]]), torch.tensor([[0.8, 2.5]])
    mask = torch.ones(1, 2, dtype=torch.bool)
    close(value_loss(v, R, mask).item(), 0.5 * (0.25 + 1.0) / 2)
    # clipped: V_clip = [0.8+0.2, 2.5-0.2] = [1.0, 2.3] -> errors [.25, 1.69]; max -> [.25, 1.69]
    close(value_loss(v, R, mask, old_values=old, clip=0.2).item(), 0.5 * (0.25 + 1.69) / 2)


# -- sequences ---------------------------------------------------------------------------------


def test_policy_inputs_layout_and_mask_offset():
    ids, mask, pos = policy_inputs([[5, 6], [7]], [[8, 9, 2], [4]], "prompt", bos_id=1, pad_id=0)
    assert pos is None
    assert ids.tolist() == [[1, 5, 6, 8, 9, 2], [1, 7, 4, 0, 0, 0]]
    # logits at column t score token t+1: responses start at columns 3 and 2
    assert mask.int().tolist() == [[0, 0, 1, 1, 1, 0], [0, 1, 0, 0, 0, 0]]
    ids, mask, _ = policy_inputs([[5, 6], [7]], [[8, 9, 2], [4]], "response_only", 1, 0)
    assert ids.tolist() == [[1, 8, 9, 2], [1, 4, 0, 0]]
    assert mask.int().tolist() == [[1, 1, 1, 0], [1, 0, 0, 0]]
    with pytest.raises(RlboundError, match="BOS"):
        policy_inputs([[5]], [[6]], "response_only", None, 0)


@pytest.fixture(scope="module")
def tiny():
    from rlbound.engines.tiny.model import TinyConfig, TinyLlama
    from rlbound.engines.tiny.tokenizer import CharTokenizer

    torch.manual_seed(0)
    model = TinyLlama(TinyConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64, max_seq_len=64))
    with torch.no_grad():  # a large spread makes distributions peaked and position-dependent
        for p in model.parameters():
            p.normal_(0.0, 0.3) if p.dim() == 2 else p.uniform_(0.5, 1.5)
    return model.eval(), CharTokenizer()


PROMPTS = ["Q: 1+2\nA: ", "Q: ((13*8)+20)*8\nA: "]
COMPLETIONS = ["3\n#### 3", "104"]


def test_prerl_logprobs_equal_the_bare_response_after_bos(tiny):
    model, tok = tiny
    prompts = [tok.encode(p) for p in PROMPTS]
    responses = [tok.encode(c) + [tok.eos_id] for c in COMPLETIONS]
    with torch.no_grad():
        ids, mask, _ = policy_inputs(prompts, responses, "response_only", tok.bos_id, tok.pad_id)
        lp = gather_logprobs(model(ids), ids, mask)
        pids, pmask, _ = policy_inputs(prompts, responses, "prompt", tok.bos_id, tok.pad_id)
        lp_prompted = gather_logprobs(model(pids), pids, pmask)
        for b, resp in enumerate(responses):
            alone = torch.tensor([[tok.bos_id, *resp]])  # one plain sequence, no padding
            ref = torch.log_softmax(model(alone)[0, :-1], dim=-1)
            ref = ref.gather(1, alone[0, 1:, None]).squeeze(1)
            close(lp[b][mask[b]], ref, tol=1e-5)
            assert (lp[b][~mask[b]] == 0).all()
            assert len(lp_prompted[b][pmask[b]]) == len(resp)
            assert (lp_prompted[b][pmask[b]] - lp[b][mask[b]]).abs().max() > 1e-2


def test_prompted_logprobs_equal_engine_score_plus_eos(tiny):
    from rlbound.engines.tiny.engine import TinyEngine

    model, tok = tiny
    engine = TinyEngine.from_model(model, tok, batch_size=4)
    scores = engine.score(PROMPTS, COMPLETIONS)
    prompts = [tok.encode(p) for p in PROMPTS]
    responses = [tok.encode(c) + [tok.eos_id] for c in COMPLETIONS]
    with torch.no_grad():
        ids, mask, _ = policy_inputs(prompts, responses, "prompt", tok.bos_id, tok.pad_id)
        logits = model(ids)
        lp = gather_logprobs(logits, ids, mask)
        ent = token_entropy(logits, mask)
    for b, s in enumerate(scores):
        ours = lp[b][mask[b]]
        n = len(COMPLETIONS[b])
        # score() has one entry per completion character; our last entry is the EOS token
        close(ours[:n], s.token_logprobs, tol=1e-5)
        close(ent[b][mask[b]][:n], s.token_entropies, tol=1e-5)
        end = len(prompts[b]) + n  # column of the last completion character
        eos_ref = torch.log_softmax(logits[b, end], dim=-1)[tok.eos_id]
        close(ours[n], eos_ref)


def test_gather_logprobs_temperature_and_gradient(tiny):
    model, tok = tiny
    ids, mask, _ = policy_inputs([tok.encode("Q: 7\nA: ")], [tok.encode("7")], "prompt",
                                 tok.bos_id, tok.pad_id)
    logits = model(ids)
    hot = gather_logprobs(logits, ids, mask, temperature=2.0)
    col = int(mask[0].nonzero()[0])
    expected = torch.log_softmax(logits[0, col] / 2.0, dim=-1)[ids[0, col + 1]]
    close(hot[0, col].item(), expected.item())
    gather_logprobs(logits, ids, mask).sum().backward()
    assert model.embed.weight.grad is not None


def test_token_advantages_entry_point_and_loss_overrides():
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    kl = torch.tensor([[0.5, 0.2, 0.1, 0.0], [0.3, 0.4, 0.0, 0.0]])
    adv, ret = token_advantages(A["reinforce_pp"], [1.0, 0.0], mask, token_kl=kl, kl_coef=0.1)
    close(ret, [[0.92, 0.97, 0.99, 0], [-0.07, -0.04, 0, 0]])
    # default beta is the algorithm's (1e-3): row0 last token 1 - 1e-4
    _, ret = token_advantages(A["reinforce_pp"], [1.0, 0.0], mask, token_kl=kl)
    close(ret[0, 2].item(), 1 - 1e-4)
    with pytest.raises(ValueError, match="outcome-level"):
        token_advantages(A["grpo"], [1.0, 0.0], mask)
    # policy_loss overrides: kl_coef / entropy_coef given explicitly win over the algorithm's
    m = torch.ones(1, 2, dtype=torch.bool)
    logp, ref = torch.full((1, 2), math.log(0.5)), torch.full((1, 2), math.log(0.25))
    loss, _ = policy_loss(A["grpo"], logp, logp, torch.zeros(1, 2), m, ref_logp=ref, kl_coef=0.2)
    close(loss.item(), 0.2 * (0.5 - 1 + math.log(2)))
    loss, _ = policy_loss(replace(A["grpo"], entropy_coef=0.5), logp, logp, torch.zeros(1, 2), m,
                          entropy=torch.ones(1, 2), entropy_coef=0.0)
    assert loss.item() == 0.0
