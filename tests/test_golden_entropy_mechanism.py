"""Clip-Cov / KL-Cov against numbers computed with the authors' reference implementation.

Fixture: tests/fixtures/entropy_mechanism_golden.json, generated outside this repo from
PRIME-RL/Entropy-Mechanism-of-RL@88505792 ``verl/trainer/ppo/core_algos.py`` (torch 2.13 CPU, float64).
The authors' ``masked_mean`` divides by ``mask.sum() + 1e-8``; ours divides by ``mask.sum()``, a relative
difference of ~1e-10, hence rtol 1e-8.
"""
import json
from pathlib import Path

import pytest
import torch

from harness.methods.context import TokenContext
from harness.methods.registry import get_method
from conftest import assert_matches_golden

FIX = json.loads((Path(__file__).parent / "fixtures" / "entropy_mechanism_golden.json").read_text())
CASES = FIX["cases"]


def _hparams(case):
    hp = case["hparams"]
    if case["function"] == "clip_cov":
        return {"clip_cov_ratio": hp["clip_ratio"], "clip_cov_lb": hp["clip_cov_lb"], "clip_cov_ub": hp["clip_cov_ub"],
                "clip_ratio_low": hp["cliprange_low"], "clip_ratio_high": hp["cliprange_high"]}
    return {"k_percent": hp["k_percent"], "ppo_kl_coef": hp["ppo_kl_coef"]}


def _run(case):
    t = {k: torch.tensor(v, dtype=torch.float64) for k, v in case["inputs"].items()}
    logps = t["log_prob"].clone().requires_grad_(True)
    seed = case["torch_manual_seed"]
    gen = torch.Generator().manual_seed(seed if seed is not None else 0)
    ctx = TokenContext.build(logps, t["old_log_prob"], t["advantages"], t["response_mask"], generator=gen)
    method = get_method(case["function"])
    per_token, metrics = method.fn(ctx, **method.resolve(_hparams(case)))
    loss = (per_token * ctx.mask).sum() / ctx.mask.sum()        # verl "token-mean"
    loss.backward()
    return loss, logps.grad, metrics


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_loss_and_gradient_match_authors_code(case):
    loss, grad, metrics = _run(case)
    exp = case["expected"]
    assert_matches_golden(loss, grad, exp)
    n_sel = sum(map(sum, exp["selected_mask"]))
    assert metrics["method/frac_tokens_touched"] == pytest.approx(n_sel / exp["n_valid_tokens"])


@pytest.mark.parametrize("case", [c for c in CASES if c["function"] == "clip_cov"], ids=lambda c: c["name"])
def test_clip_cov_selects_the_same_tokens(case):
    """The detached tokens (gradient exactly zero there) are the authors' ``corr == 0`` tokens."""
    _, grad, _ = _run(case)
    sel = torch.tensor(case["expected"]["selected_mask"], dtype=torch.bool)
    assert torch.all(grad[sel] == 0)
    mask = torch.tensor(case["inputs"]["response_mask"]) > 0
    adv = torch.tensor(case["inputs"]["advantages"])
    ppo_clipped = torch.tensor(case["expected"]["clipped_by_origin_mask"], dtype=torch.bool)
    assert torch.all(grad[mask & ~sel & ~ppo_clipped & (adv != 0)] != 0)


def test_kl_cov_on_policy_is_exactly_the_baseline():
    """Card pitfall / small-scale claim 5: with logp_old == logp KL-Cov equals the vanilla PG loss and gradient."""
    case = next(c for c in CASES if c["name"] == "kl_cov_on_policy_small")
    loss, grad, _ = _run(case)
    t = {k: torch.tensor(v, dtype=torch.float64) for k, v in case["inputs"].items()}
    lp = t["log_prob"].clone().requires_grad_(True)
    base = (-t["advantages"] * torch.exp(lp - lp.detach()) * t["response_mask"]).sum() / t["response_mask"].sum()
    base.backward()
    assert loss.item() == base.item()
    assert torch.equal(grad, lp.grad)


def test_k_percent_units_match_verl_port_fraction():
    """Authors: k_percent=0.2 (percent); verl port: kl_cov_ratio=0.002 (fraction): the same token count."""
    for n in (1, 17, 500, 5000, 123457):
        k = 0.2
        assert max(1, int(n * k / 100)) == max(1, int(n * (k / 100)))


def test_fixture_names_its_source():
    assert FIX["source"]["commit"].startswith("88505792")
    assert FIX["source"]["file"] == "verl/trainer/ppo/core_algos.py"
