"""SIREN against numbers computed with the authors' code (tests/fixtures/siren_golden.json: Linn3a/siren@fa59a8d,
``efficient_top_p_sampling``, ``mask_by_quantile``, ``compute_policy_loss``, ``agg_loss``; float64 CPU), plus
invariants and the regulariser's scale under every supported ``loss_type`` (through the trainer's
``_loss_from_method``). The authors' epsilons (1e-12 in the renormalised entropy, 1e-8 in masked_mean) give relative
differences below 1e-9, hence rtol 1e-7.

Re-check / regenerate the fixture from the authors' code (loaded at run time; none of it is committed):

    git clone https://github.com/Linn3a/siren /tmp/siren && git -C /tmp/siren checkout fa59a8d
    python tests/fixtures/generators/siren.py /tmp/siren          # check; --write rewrites `expected`
"""
import functools
import json
import types
from pathlib import Path

import pytest
import torch

from harness.methods.context import TokenContext, ppo_clipped_loss
from harness.methods import siren as siren_mod
from harness.methods.registry import get_method

FIX = json.loads((Path(__file__).parent / "fixtures" / "siren_golden.json").read_text())
CASES = FIX["cases"]


def _ctx(inp, logits, gen=None):
    ids = torch.tensor(inp["completion_ids"])
    logps = torch.log_softmax(logits, -1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    adv = torch.tensor(inp["advantages"], dtype=torch.float64)
    ctx = TokenContext.build(logps, torch.tensor(inp["old_logps"], dtype=torch.float64), adv,
                             torch.tensor(inp["mask"], dtype=torch.float64), generator=gen)
    ctx.logits = logits
    return ctx


def _stub_trainer(loss_type, ga=4, max_completion_length=3072):
    """What HarnessGRPOTrainer._loss_from_method / _aggregate read, without a model."""
    from harness.train.trainer import HarnessGRPOTrainer

    st = types.SimpleNamespace(loss_type=loss_type, max_completion_length=max_completion_length,
                               current_gradient_accumulation_steps=ga,
                               accelerator=types.SimpleNamespace(num_processes=1),
                               args=types.SimpleNamespace(steps_per_generation=2 * ga))
    st._aggregate = functools.partial(HarnessGRPOTrainer._aggregate, st)
    st.total = functools.partial(HarnessGRPOTrainer._loss_from_method, st)
    return st


def _run(case, gen=None, loss_type="bnpo", ga=1, **over):
    logits = torch.tensor(case["inputs"]["logits"], dtype=torch.float64, requires_grad=True)
    ctx = _ctx(case["inputs"], logits, gen)
    m = get_method("siren")
    out = m.fn(ctx, **m.resolve({**case["hparams"], **over}))
    inputs = {"num_items_in_batch": ctx.mask.sum() * 2}          # a generation batch of 2 accumulation windows
    loss, _ = _stub_trainer(loss_type, ga).total(out, ctx.mask, inputs, "train")
    loss.backward()
    return loss, logits.grad, out[1], ctx


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_loss_and_logit_gradient_match_authors_code(case):
    loss, grad, metrics, _ = _run(case, gen=torch.Generator().manual_seed(0))
    exp = case["expected"]
    assert loss.item() == pytest.approx(exp["loss"], rel=1e-7, abs=1e-10)
    torch.testing.assert_close(grad, torch.tensor(exp["grad_logits"], dtype=torch.float64), rtol=1e-7, atol=1e-10)
    assert metrics["siren/masked_topp_entropy"] == pytest.approx(exp["entropy_loss"], rel=1e-7)
    assert metrics["siren/anchor"] == pytest.approx(exp["anchor"], rel=1e-7)
    assert metrics["clip_ratio/region_mean"] == pytest.approx(exp["pg_clipfrac"], rel=1e-6)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_top_p_entropy_and_peak_mask_match(case):
    logits = torch.tensor(case["inputs"]["logits"], dtype=torch.float64)
    mask = torch.tensor(case["inputs"]["mask"], dtype=torch.float64)
    hp = case["hparams"]
    h, _ = siren_mod.top_p_entropy(logits, hp["entropy_topp"], hp["entropy_topk"])
    exp = torch.tensor(case["expected"]["topp_entropy"], dtype=torch.float64)
    torch.testing.assert_close(h * mask, exp, rtol=1e-8, atol=1e-10)
    m = siren_mod.peak_mask(h, mask, hp["mask_ratio"])
    assert torch.equal(m.long(), torch.tensor(case["expected"]["value_mask"]))
    # the authors' double application of mask_by_quantile selects the same tokens as one pass
    assert case["expected"]["value_mask"] == case["expected"]["value_mask_single_pass"]


def test_confident_token_has_empty_nucleus_and_zero_entropy():
    """Authors' searchsorted cut-off: tokens with cumulative probability < p; top-1 prob >= p -> entropy 0."""
    z = torch.tensor([[10.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]], dtype=torch.float64)
    h, cnt = siren_mod.top_p_entropy(z, 0.8, 10000)
    assert cnt.tolist() == [0, 3] and h[0].item() == 0.0
    # row 2: cumulative 0.25, 0.5, 0.75 < 0.8 -> 3 tokens by rank; the 4th ties the boundary logit and is kept too
    # (documented deviation: ties at the boundary are all kept; the authors' topk order would drop it)
    assert h[1].item() == pytest.approx(torch.log(torch.tensor(4.0, dtype=torch.float64)).item())


def test_gradient_matches_autograd_reference():
    """The custom backward equals autograd through an explicit masked softmax entropy."""
    g = torch.Generator().manual_seed(5)
    z = (torch.randn(6, 9, generator=g, dtype=torch.float64) * 2).requires_grad_(True)
    w = torch.randn(6, generator=g, dtype=torch.float64)
    h, _ = siren_mod.top_p_entropy(z, 0.9, 5)
    (h * w).sum().backward()
    thr, _ = siren_mod.nucleus_threshold(z.detach(), 0.9, 5)
    z2 = z.detach().clone().requires_grad_(True)
    keep = z2.detach() >= thr.unsqueeze(-1)
    q = torch.softmax(z2.masked_fill(~keep, float("-inf")), -1)
    h2 = -(q * torch.log(q.clamp_min(1e-300))).sum(-1) * keep.any(-1)
    (h2 * w).sum().backward()
    torch.testing.assert_close(z.grad, z2.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(h, h2.detach(), rtol=1e-10, atol=1e-12)


def test_zero_coefficient_without_dual_clip_equals_ppo_baseline():
    """Invariant: c = 0 and no dual clip -> exactly the clipped PPO loss and gradient."""
    case = CASES[0]
    logits = torch.tensor(case["inputs"]["logits"], dtype=torch.float64, requires_grad=True)
    ctx = _ctx(case["inputs"], logits)
    m = get_method("siren")
    hp = m.resolve({**case["hparams"], "entropy_coeff": 0.0, "clip_ratio_c": None})
    per_token, _, reg = m.fn(ctx, **hp)
    base, _ = ppo_clipped_loss(ctx, hp["clip_ratio_low"], hp["clip_ratio_high"])
    assert torch.equal(per_token, base) and float(reg.detach()) == 0.0


REG_CASES = [c for c in CASES if c["expected"]["reg_loss"] > 0]


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize("case", REG_CASES, ids=[c["name"] for c in REG_CASES])
def test_regulariser_gradient_equals_authors_for_every_loss_type(case, loss_type):
    """The regulariser's effective coefficient is the authors': its gradient (total with c minus total with c = 0,
    through the trainer's aggregation) equals the authors' d[c (H - anchor)^2]/d logits times verl's micro-batch
    weight 1 / gradient_accumulation, for each loss_type (dr_grpo's B * L_max normaliser no longer touches it)."""
    ga = 4
    _, g_with, m_with, _ = _run(case, loss_type=loss_type, ga=ga)
    _, g_without, _, _ = _run(case, loss_type=loss_type, ga=ga, entropy_coeff=0.0)
    ours = g_with - g_without
    authors = torch.tensor(case["expected"]["grad_logits_reg"], dtype=torch.float64) / ga
    assert m_with["siren/reg_loss"] == pytest.approx(case["expected"]["reg_loss"], rel=1e-7)
    assert ours.norm().item() == pytest.approx(authors.norm().item(), rel=1e-7)
    torch.testing.assert_close(ours, authors, rtol=1e-6, atol=1e-12)


def test_regulariser_spread_over_tokens_would_shrink_under_dr_grpo():
    """Why the regulariser is a scalar term: spread as the same value over the valid tokens, dr_grpo's normaliser
    (B * L_max) would weight it n_valid / (B * L_max) (the paper tier: ~mean_len / 3072)."""
    case = REG_CASES[0]
    mask = torch.tensor(case["inputs"]["mask"], dtype=torch.float64)
    reg = torch.tensor(case["expected"]["reg_loss"], dtype=torch.float64)
    st = _stub_trainer("dr_grpo", ga=1)
    spread, _ = st._aggregate(reg * mask, mask, {}, "train")
    assert spread.item() == pytest.approx(reg.item() * mask.sum().item() / (mask.shape[0] * 3072))
    scalar, _ = st.total((torch.zeros_like(mask), {}, reg), mask, {}, "train")
    assert scalar.item() == pytest.approx(reg.item())


def test_anchor_is_measured_once_per_run():
    case = CASES[2]
    gen = torch.Generator().manual_seed(1)
    _, _, m1, _ = _run(case, gen)
    assert m1["siren/reg_loss"] == 0.0
    _, _, m2, _ = _run({**CASES[0], "hparams": {**CASES[0]["hparams"], "entropy_anchor": None}}, gen)
    assert m2["siren/anchor"] == m1["siren/anchor"]                 # kept from the first call of this run
    assert m2["siren/reg_loss"] > 0


def test_fixture_names_its_source():
    assert FIX["source"]["repo"] == "Linn3a/siren" and FIX["source"]["commit"].startswith("fa59a8d")
