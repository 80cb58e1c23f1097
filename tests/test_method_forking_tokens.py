"""Forking tokens (arXiv 2506.01939): ``forking_tokens`` (the authors' selection and kept-token normalisation, a loss
method) and ``forking_tokens_trl`` (TRL's ``top_entropy_quantile``), checked against the authors' code.

Fixture: tests/fixtures/forking_tokens_golden.json, from Shenzhi-Wang/Beyond-the-80-20-Rule-RLVR@6f5dda6f
``verl/trainer/ppo/core_algos.py`` (``get_global_entropy_top_mask``, ``compute_policy_loss_vanilla`` with the
kept-token mask, ``agg_loss`` token-mean), torch CPU float64. TRL's ``GRPOTrainer.get_high_entropy_mask`` is called
unbound with a one-process accelerator stand-in.

Re-check / regenerate the fixture from the authors' code (loaded at run time; none of it is committed):

    git clone https://github.com/Shenzhi-Wang/Beyond-the-80-20-Rule-RLVR /tmp/80-20
    git -C /tmp/80-20 checkout 6f5dda6f
    python tests/fixtures/generators/forking_tokens.py /tmp/80-20          # check; --write rewrites `expected`
"""
import json
import math
import types
from pathlib import Path

import pytest
import torch
from trl import GRPOTrainer

from harness.plan import resolve_job
from harness.methods import forking_tokens as ft
from harness.methods.context import TokenContext
from harness.methods.registry import get_method

FIX = json.loads((Path(__file__).parent / "fixtures" / "forking_tokens_golden.json").read_text())
CASES = FIX["cases"]

_ONE_PROCESS = types.SimpleNamespace(accelerator=types.SimpleNamespace(
    pad_across_processes=lambda x, dim=0, pad_index=0: x, gather=lambda x: x))


def trl_mask(entropy, mask, rho):
    """TRL 1.16's selection, exactly as ``_compute_loss`` calls it: quantile threshold 1 - top_entropy_quantile.
    Entropies are float32 as in training: TRL takes the quantile in float32 (``.float()``) and compares it with the
    entropies in their own dtype, so float64 entropies can fall just below their own float32-rounded threshold."""
    return GRPOTrainer.get_high_entropy_mask(_ONE_PROCESS, entropy.float(), mask, 1 - rho)


def paper_mask(entropy, mask, rho):
    """The paper's definition (Sec. 4): the ceil(rho * n) valid tokens of highest entropy."""
    flat = entropy.flatten().clone()
    valid = mask.flatten() > 0
    flat[~valid] = -math.inf
    k = max(1, math.ceil(rho * int(valid.sum()) - 1e-9))
    out = torch.zeros_like(valid)
    out[torch.argsort(flat, descending=True)[:k]] = True
    return out.view_as(entropy) & (mask > 0)


def _t(case, key):
    return torch.tensor(case["inputs"][key], dtype=torch.float64)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_paper_definition_matches_authors_mask(case):
    m = paper_mask(_t(case, "entropy"), _t(case, "response_mask"), case["top_ratio"])
    assert torch.equal(m, torch.tensor(case["expected"]["entropy_top_mask"]) > 0)


@pytest.mark.parametrize("case", [c for c in CASES if c["top_ratio"] == 0.2], ids=lambda c: c["name"])
def test_trl_selects_the_authors_tokens_at_rho_0_2(case):
    m = trl_mask(_t(case, "entropy"), _t(case, "response_mask"), case["top_ratio"])
    assert torch.equal(m, torch.tensor(case["expected"]["entropy_top_mask"]) > 0)


def test_trl_keeps_one_token_fewer_when_frac_of_rho_n_is_below_rho():
    """Documented selection difference: rho = 0.3, n = 4 -> authors ceil(1.2) = 2, TRL 1 + floor(0.9) = 1."""
    case = next(c for c in CASES if c["name"] == "rho0.3_4tokens_differs")
    m = trl_mask(_t(case, "entropy"), _t(case, "response_mask"), 0.3)
    authors = torch.tensor(case["expected"]["entropy_top_mask"]) > 0
    assert int(authors.sum()) == 2 and int(m.sum()) == 1
    assert torch.all(authors[m])                       # TRL's token is the authors' top one


@pytest.mark.parametrize("rho", [0.2, 0.1, 0.25, 0.5])
def test_trl_count_formula_over_many_batch_sizes(rho):
    """TRL keeps 1 + floor(rho (n-1)) tokens; equal to ceil(rho n) unless 0 < frac(rho n) < rho."""
    g = torch.Generator().manual_seed(0)
    for n in range(1, 301):
        ent = torch.rand(1, n, generator=g, dtype=torch.float64)
        mask = torch.ones(1, n, dtype=torch.float64)
        m = trl_mask(ent, mask, rho)
        x = rho * n
        frac = x - math.floor(x + 1e-9)
        same = frac < 1e-9 or frac >= rho - 1e-9
        if same:
            assert torch.equal(m, paper_mask(ent, mask, rho)), n
        else:
            assert int(m.sum()) == math.ceil(x) - 1, n


@pytest.mark.parametrize("case", CASES[:4], ids=lambda c: c["name"])
def test_trl_loss_is_authors_loss_times_kept_share(case):
    """The normalisation difference, numerically: TRL's bnpo loss (mask times per-token loss, divided by ALL valid
    tokens) equals the authors' token-mean over kept tokens times n_kept / n_valid; same for the gradient."""
    hp, exp = case["hparams"], case["expected"]
    lp = _t(case, "log_prob").requires_grad_(True)
    old, adv, mask = _t(case, "old_log_prob"), _t(case, "advantages"), _t(case, "response_mask")
    ratio = torch.exp(lp - old)
    assert float(ratio.detach().max()) < hp["clip_ratio_c"]     # authors' dual clip inactive here (TRL has none)
    per_token = -torch.min(ratio * adv, torch.clamp(ratio, 1 - hp["clip_ratio_low"], 1 + hp["clip_ratio_high"]) * adv)
    per_token = per_token * trl_mask(_t(case, "entropy"), mask, case["top_ratio"])
    loss = (per_token * mask).sum() / mask.sum()        # TRL loss_type="bnpo"
    loss.backward()
    scale = (exp["n_selected"] + 1e-8) / exp["n_valid"]  # authors' masked_mean has +1e-8
    assert loss.item() == pytest.approx(exp["loss"] * scale, rel=1e-10, abs=1e-14)
    torch.testing.assert_close(lp.grad, torch.tensor(exp["grad_log_prob"], dtype=torch.float64) * scale,
                               rtol=1e-10, atol=1e-14)


def test_rho_one_is_the_baseline():
    """top_entropy_quantile = 1 keeps every valid token (TRL skips the mask entirely below 1.0 only)."""
    case = CASES[1]
    m = trl_mask(_t(case, "entropy"), _t(case, "response_mask"), 1.0)
    assert torch.equal(m, _t(case, "response_mask") > 0)


def _authors_method_loss(case, **over):
    """``forking_tokens`` through the trainer's bnpo normaliser (sum over valid tokens / n_valid)."""
    hp = {k: v for k, v in case["hparams"].items() if k != "loss_agg_mode"}
    lp = _t(case, "log_prob").requires_grad_(True)
    ctx = TokenContext.build(lp, _t(case, "old_log_prob"), _t(case, "advantages"), _t(case, "response_mask"),
                             entropies=_t(case, "entropy"))
    m = get_method("forking_tokens")
    per_token, metrics = m.fn(ctx, **m.resolve({**hp, "top_entropy_ratio": case["top_ratio"], **over}))
    loss = (per_token * ctx.mask).sum() / ctx.mask.sum()
    loss.backward()
    return loss, lp.grad, metrics


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_forking_tokens_selects_the_authors_tokens(case):
    for scope in ("micro_batch", "all_processes"):          # one process: the scopes agree
        m = ft.entropy_top_mask(_t(case, "entropy"), _t(case, "response_mask"), case["top_ratio"], scope)
        assert torch.equal(m, torch.tensor(case["expected"]["entropy_top_mask"]) > 0)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_forking_tokens_loss_and_gradient_match_authors_code(case):
    """The authors' normalisation: the token-mean over the KEPT tokens (their masked_mean adds 1e-8: rel ~1e-9)."""
    loss, grad, metrics = _authors_method_loss(case)
    exp = case["expected"]
    assert loss.item() == pytest.approx(exp["loss"], rel=1e-8, abs=1e-14)
    torch.testing.assert_close(grad, torch.tensor(exp["grad_log_prob"], dtype=torch.float64), rtol=1e-8, atol=1e-14)
    assert metrics["method/frac_tokens_touched"] == pytest.approx(1 - exp["n_selected"] / exp["n_valid"])
    assert metrics["forking/loss_scale"] == pytest.approx(exp["n_valid"] / exp["n_selected"])


def test_forking_tokens_gradient_is_trl_gradient_over_kept_share():
    """The normalisation difference between the two named methods (same tokens at rho = 0.2, no dual clip hit)."""
    case = CASES[0]
    _, g_authors, _ = _authors_method_loss(case)
    lp = _t(case, "log_prob").requires_grad_(True)
    old, adv, mask = _t(case, "old_log_prob"), _t(case, "advantages"), _t(case, "response_mask")
    ratio = torch.exp(lp - old)
    hp = case["hparams"]
    per_token = -torch.min(ratio * adv, torch.clamp(ratio, 1 - hp["clip_ratio_low"], 1 + hp["clip_ratio_high"]) * adv)
    ((per_token * trl_mask(_t(case, "entropy"), mask, 0.2) * mask).sum() / mask.sum()).backward()
    share = case["expected"]["n_selected"] / case["expected"]["n_valid"]
    torch.testing.assert_close(lp.grad, g_authors * share, rtol=1e-10, atol=1e-14)


def test_registered_methods_and_defaults():
    m = get_method("forking_tokens")
    assert m.point == "loss" and m.paper == "forking_tokens"
    assert m.hparams["top_entropy_ratio"].default == 0.2
    assert m.hparams["selection_scope"].default == "micro_batch"
    assert (m.hparams["clip_ratio_low"].default, m.hparams["clip_ratio_high"].default,
            m.hparams["clip_ratio_c"].default) == (0.2, 0.28, 10.0)           # the authors' script
    t = get_method("forking_tokens_trl")
    assert t.point == "config" and t.paper == "forking_tokens"
    assert t.hparams["top_entropy_quantile"].default == 0.2
    job = resolve_job("forking_tokens", "smoke", "forking_tokens_trl", 42)
    assert job["trl"]["top_entropy_quantile"] == 0.2
    own = resolve_job("forking_tokens", "smoke", "forking_tokens", 42)
    assert "top_entropy_quantile" not in own["trl"] and own["hparams"]["top_entropy_ratio"] == 0.2
    assert "top_entropy_quantile" not in resolve_job("forking_tokens", "smoke", "grpo", 42)["trl"]


def test_fixture_names_its_source():
    assert FIX["source"]["commit"].startswith("6f5dda6f")
    assert FIX["source"]["file"] == "verl/trainer/ppo/core_algos.py"
