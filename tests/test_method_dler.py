"""DLER against numbers computed with the authors' code: tests/fixtures/dler_golden.json, from NVlabs/DLER @ ea7d4f7b
(``verl-dler/``: the truncation penalty of ``reward_manager/dapo.py``, the group filter of
``recipe/dapo/dapo_ray_trainer.py``, ``compute_reinforce_plus_plus_baseline_outcome_advantage``,
``boost_high_score_advantages`` and the dual-clip ``compute_policy_loss_vanilla``), plus the invariants of the issue
and real training steps through the trainer (dynamic sampling refills dropped groups).

Regenerate / re-check the fixture from the authors' code (loaded at run time, none is committed):

    git clone https://github.com/NVlabs/DLER /tmp/DLER
    python tests/fixtures/generators/dler.py /tmp/DLER          # check; --write rewrites `expected`
"""
import json
import math
import re
from pathlib import Path

import pytest
import torch

from harness.methods import dler as dler_mod
from harness.methods.context import AdvantageContext, BatchContext, TokenContext, dual_clip_ppo
from harness.methods.registry import get_method
from conftest import tiny_grpo_trainer

FIX = json.loads((Path(__file__).parent / "fixtures" / "dler_golden.json").read_text())
CASES = FIX["cases"]
G = 4


def _actx(rewards, mask, truncated, group_size=G):
    rewards = torch.as_tensor(rewards, dtype=torch.float64)
    mask = torch.as_tensor(mask, dtype=torch.float64)
    return AdvantageContext(rewards=rewards, group_size=group_size, mask=mask,
                            completion_ids=torch.zeros(mask.shape, dtype=torch.long),
                            truncated=torch.as_tensor(truncated, dtype=torch.bool))


def _adv(case_or_ctx, **over):
    m = get_method("dler")
    if isinstance(case_or_ctx, dict):
        i = case_or_ctx["inputs"]
        ctx = _actx(i["scores"], i["mask"], i["truncated"])
        over = {**case_or_ctx["hparams"], **over}
    else:
        ctx = case_or_ctx
    return m.hook("advantage")(ctx, **m.resolve(over))


def _data(case, **over):
    m = get_method("dler")
    i = case["inputs"]
    bctx = BatchContext(stage="scored", group_size=G, rewards=torch.tensor(i["scores"]),
                        mask=torch.tensor(i["mask"]), truncated=torch.tensor(i["truncated"]))
    return m.hook("data")(bctx, **m.resolve({**case["hparams"], **over}))


def test_defaults_are_the_authors_release():
    """dler_slurm.sh @ ea7d4f7b + recipe/dapo/config/dapo_trainer.yaml: stop_properly_penalty 0.1, filter_groups on
    with metric seq_reward, boost 0, clip 0.2 / 0.28, dual clip c 10; generation rounds bounded at 4 batches (the
    authors: no limit, max_num_gen_batches 0, still accepted)."""
    m = get_method("dler")
    hp = m.resolve()
    assert hp == {"truncated_reward_scale": 0.1, "filter_metric": "seq_reward", "dynamic_sampling": "refill",
                  "max_num_gen_batches": 4, "correct_sample_advantage_boost": 0.0}
    assert m.trl_overrides == {"epsilon": 0.2, "epsilon_high": 0.28, "delta": 10.0, "mask_truncated_completions": False}
    assert set(m.hooks) == {"advantage", "data"}


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_advantage_filter_and_loss_match_authors_code(case):
    exp = case["expected"]
    adv, metrics = _adv(case)
    torch.testing.assert_close(adv, torch.tensor(exp["advantages"], dtype=torch.float64), rtol=1e-8, atol=1e-8)
    dec = _data(case)
    kept = torch.tensor([j in exp["kept_rows"] for j in range(len(adv))])
    if case["hparams"]["dynamic_sampling"] == "off":
        assert dec.keep is None and not dec.resample
    else:
        assert torch.equal(dec.keep, kept) and dec.resample and dec.resample_max_rounds is None
    i = case["inputs"]
    penal = dler_mod.penalised_rewards(torch.tensor(i["scores"]), torch.tensor(i["truncated"]),
                                       case["hparams"]["truncated_reward_scale"])
    torch.testing.assert_close(penal, torch.tensor(exp["rewards"], dtype=torch.float64), rtol=1e-6, atol=1e-7)
    # the loss: dual-clip PPO (clip 0.2/0.28, c 10), token mean over the kept rows, as verl; gradient per token
    logp = torch.tensor(i["log_prob"], dtype=torch.float64).requires_grad_(True)
    ctx = TokenContext.build(logp, torch.tensor(i["old_log_prob"], dtype=torch.float64), adv,
                             torch.tensor(i["mask"], dtype=torch.float64) * kept.unsqueeze(1))
    per_tok, clipped = dual_clip_ppo(ctx, 0.2, 0.28, 10.0)
    loss = (per_tok * ctx.mask).sum() / ctx.mask.sum()
    loss.backward()
    assert loss.item() == pytest.approx(exp["loss"], rel=1e-8, abs=1e-12)
    torch.testing.assert_close(logp.grad, torch.tensor(exp["grad_log_prob"], dtype=torch.float64),
                               rtol=1e-7, atol=1e-10)
    assert float(clipped.sum() / ctx.mask.sum()) == pytest.approx(exp["pg_clipfrac"], rel=1e-6)
    assert 0.0 <= metrics["method/frac_tokens_touched"] <= 1.0


def test_fixture_exercises_every_branch():
    """Clip-low, clip-high and dual clip are all active; one all-correct group has a truncated correct response
    (kept by seq_final_reward only) and the filter-off case keeps the groups the others drop."""
    by = {c["name"]: c["expected"] for c in CASES}
    assert by["code_defaults"]["pg_clipfrac_lower"] > 0 and by["code_defaults"]["pg_clipfrac"] > 0
    assert set(by["filter_on_penalised_reward"]["kept_rows"]) - set(by["code_defaults"]["kept_rows"]) == {4, 5, 6, 7}
    assert len(by["no_group_filter"]["kept_rows"]) == 16 and len(by["code_defaults"]["kept_rows"]) == 8


# ------------------------------------------------------------------------------------------------ invariants
def _reinforce_pp_batch(r, n_tok, G):
    """Independent statement of the batch-normalised REINFORCE++ baseline: reward minus group mean, then divided by
    the std of that quantity over all response tokens of the batch (token-weighted, unbiased, mean removed)."""
    a = (r.view(-1, G) - r.view(-1, G).mean(1, keepdim=True)).reshape(-1)
    tok = torch.cat([a[i].repeat(int(n)) for i, n in enumerate(n_tok)])
    return (a - tok.mean()) / tok.std()


def test_no_truncation_no_zero_variance_equals_batch_normalised_reinforce_pp():
    g = torch.Generator().manual_seed(3)
    r = torch.tensor([1., 0, 0, 1, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0, 1, 0], dtype=torch.float64)
    n_tok = torch.randint(2, 9, (16,), generator=g)
    mask = (torch.arange(8).unsqueeze(0) < n_tok.unsqueeze(1)).double()
    adv, _ = _adv(_actx(r, mask, torch.zeros(16, dtype=torch.bool)))
    torch.testing.assert_close(adv, _reinforce_pp_batch(r, n_tok, G), rtol=1e-6, atol=1e-7)
    # equal lengths: the per-response z-score over the batch (unbiased std), not a per-group std
    eq, _ = _adv(_actx(r, torch.ones(16, 5), torch.zeros(16, dtype=torch.bool)))
    a = (r.view(-1, G) - r.view(-1, G).mean(1, keepdim=True)).reshape(-1)
    z = (a - a.mean()) / a.std()
    torch.testing.assert_close(eq, z * math.sqrt((16 * 5 - 1) / (16 * 5)) * math.sqrt(16 / 15), rtol=1e-6, atol=1e-7)
    grpo = _actx(r, mask, torch.zeros(16, dtype=torch.bool)).grpo_advantages()   # group std: a different thing
    assert not torch.allclose(adv, grpo, atol=1e-2)


def test_truncated_responses_get_reward_zero():
    """Paper (truncated_reward_scale 0): a response cut at the cap scores 0 even with a correct answer in it, so its
    advantage equals that of a wrong response in the same group; the code's 0.1 keeps a trace of the score."""
    r = torch.tensor([1., 1, 0, 0, 1, 0, 0, 1], dtype=torch.float64)
    trunc = torch.tensor([0, 1, 1, 0, 0, 0, 1, 1], dtype=torch.bool)
    assert dler_mod.penalised_rewards(r, trunc, 0.0).tolist() == [1, 0, 0, 0, 1, 0, 0, 0]
    assert dler_mod.penalised_rewards(r, trunc, 0.1).tolist() == pytest.approx([1, 0.1, 0, 0, 1, 0, 0, 0.1])
    adv, _ = _adv(_actx(r, torch.ones(8, 4), trunc), truncated_reward_scale=0.0)
    assert adv[1] == pytest.approx(adv[2]) and adv[1] == pytest.approx(adv[3]) and adv[0] > adv[1]
    assert adv[7] == pytest.approx(adv[5]) and adv[4] > adv[7]
    code, _ = _adv(_actx(r, torch.ones(8, 4), trunc))
    assert code[2] < code[1] < code[0]


def test_zero_variance_groups_leave_the_statistics():
    """Filtered groups get advantage 0 and do not enter the batch mean/std (the authors whiten the filtered batch);
    with the filter off (and unequal lengths) their (r - mean) = 0 rows get -mean_tok / std_tok, not 0."""
    r = torch.tensor([1., 0, 1, 1, 1, 1, 1, 1], dtype=torch.float64)
    mask = (torch.arange(5).unsqueeze(0) < torch.tensor([[5], [2], [4], [3], [3], [3], [3], [3]])).double()
    adv, _ = _adv(_actx(r, mask, torch.zeros(8, dtype=torch.bool)))
    assert torch.all(adv[4:] == 0)
    alone, _ = _adv(_actx(r[:4], mask[:4], torch.zeros(4, dtype=torch.bool)))
    torch.testing.assert_close(adv[:4], alone)
    off, _ = _adv(_actx(r, mask, torch.zeros(8, dtype=torch.bool)), dynamic_sampling="off")
    assert torch.all(off[4:] != 0) and torch.allclose(off[4:], off[4:5].expand(4))


def test_filter_uses_the_score_before_the_penalty():
    """seq_reward (authors' script): an all-correct group with a truncated member is dropped though its rewards
    differ after the penalty; seq_final_reward keeps it."""
    r, trunc = torch.ones(4), torch.tensor([False, True, False, False])
    kw = dict(truncated_reward_scale=0.1)
    assert not dler_mod.kept_groups(r, trunc, 4, filter_metric="seq_reward", **kw).item()
    assert dler_mod.kept_groups(r, trunc, 4, filter_metric="seq_final_reward", **kw).item()


def test_max_num_gen_batches_counts_the_first_batch():
    case = CASES[0]
    assert _data(case, max_num_gen_batches=3).resample_max_rounds == 2
    assert _data(case, max_num_gen_batches=1).resample_max_rounds == 0
    assert _data(case, max_num_gen_batches=0).resample_max_rounds is None      # the authors' "no limit"
    dec = _data(case, dynamic_sampling="drop")
    assert not dec.resample and dec.keep is not None and not dec.keep.all()


def test_bad_modes_name_the_valid_choices():
    case = CASES[0]
    with pytest.raises(ValueError, match=r"unknown dynamic_sampling 'dapo'; valid: refill, drop, off"):
        _adv(case, dynamic_sampling="dapo")
    with pytest.raises(ValueError, match=r"unknown filter_metric 'acc'; valid: seq_reward, seq_final_reward"):
        _data(case, filter_metric="acc")
    with pytest.raises(ValueError, match="truncation flags"):
        _adv(AdvantageContext(rewards=torch.ones(4), group_size=4, mask=torch.ones(4, 2),
                              completion_ids=torch.zeros(4, 2, dtype=torch.long)))


def test_fixture_names_its_source():
    assert FIX["source"]["repo"] == "NVlabs/DLER" and FIX["source"]["commit"].startswith("ea7d4f7b")
    assert FIX["source"]["loss"] == {"clip_ratio_low": 0.2, "clip_ratio_high": 0.28, "clip_ratio_c": 10.0,
                                     "loss_agg_mode": "token-mean"}


# ------------------------------------------------------------------------------------------------ trainer
def _trainer(tiny_base, tmp_path, reward_funcs, hparams=None, **cfg):
    m = get_method("dler")
    settings = dict(per_device_train_batch_size=16, num_generations=G, max_completion_length=4, learning_rate=1e-4,
                    max_steps=1, **m.trl_overrides)
    settings.update(cfg)
    return tiny_grpo_trainer(tiny_base, tmp_path / "trainer", m, reward_funcs=reward_funcs, hparams=hparams,
                             **settings)


def _even_first(prompt: str) -> bool:
    return int(re.match(r"\d", prompt).group()) % 2 == 0


def parity_reward(completions, prompts, **kw):
    """Constant 1 for prompts starting with an even digit (zero-variance groups), text parity otherwise."""
    return [1.0 if _even_first(p) else float(sum(map(ord, c)) % 2) for c, p in zip(completions, prompts)]


def _capture(trainer):
    outs, scored = [], []
    gen, score = trainer._generate_and_score_completions, trainer._score_batch

    def spy_gen(inputs):
        outs.append(gen(inputs))
        return outs[-1]

    def spy_score(inputs):
        scored.append(list(inputs))
        return score(inputs)

    trainer._generate_and_score_completions, trainer._score_batch = spy_gen, spy_score
    return outs, scored


def test_refill_replaces_zero_variance_groups(tiny_base, tmp_path):
    """One real step: groups whose rewards do not vary are replaced by groups of extra generation rounds; the batch
    TRL trains on keeps its size, every group in it has reward variance, and its advantages are DLER's on it."""
    trainer, tok, logs = _trainer(tiny_base, tmp_path, [parity_reward], {"max_num_gen_batches": 8})
    outs, scored = _capture(trainer)
    trainer.train()
    (out,) = outs
    rounds = len(scored) - 1
    assert rounds >= 1 and any(_even_first(r["prompt"]) for r in scored[0])
    n = out["prompt_ids"].size(0)
    assert n == 16 and out["completion_ids"].size(0) == 16
    prompts = tok.batch_decode(out["prompt_ids"], skip_special_tokens=True)
    comps = [tok.decode(ids[m.bool()], skip_special_tokens=True)
             for ids, m in zip(out["completion_ids"], out["completion_mask"])]
    r = torch.tensor(parity_reward(comps, prompts), dtype=torch.float64)
    full = bool((r.view(-1, G).std(1) > 0).all())      # every place refilled (the seeds make it so)
    assert full and not any(_even_first(p) for p in prompts)
    assert "tool_mask" not in out                           # nothing dropped from the refilled batch
    trunc = trainer._truncated(out)
    exp, _ = _adv(_actx(r, out["completion_mask"], trunc), max_num_gen_batches=8)
    torch.testing.assert_close(out["advantages"].double(), exp, rtol=1e-5, atol=1e-6)
    assert int(out["num_items_in_batch"]) == int(out["completion_mask"].sum())
    row = next(x for x in logs if "dler/resample_rounds" in x)
    assert row["dler/resample_rounds"] == rounds and row["dler/extra_generations"] == rounds * 16
    assert row["dler/unfilled_frac"] == 0
    assert 0 < row["dler/frac_groups_dropped"] < 1 and "dler/frac_truncated" in row


def test_drop_only_masks_groups_without_generating(tiny_base, tmp_path):
    trainer, _, logs = _trainer(tiny_base, tmp_path, [parity_reward], {"dynamic_sampling": "drop"})
    outs, scored = _capture(trainer)
    trainer.train()
    (out,) = outs
    assert len(scored) == 1 and not any("dler/resample_rounds" in x for x in logs)
    prompts = [r["prompt"] for r in scored[0]]
    dropped = torch.tensor([_even_first(p) for p in prompts])
    assert dropped.any()
    assert torch.all(out["tool_mask"][dropped] == 0) and torch.all(out["advantages"][dropped] == 0)
    assert int(out["num_items_in_batch"]) == int((out["completion_mask"] * out["tool_mask"]).sum())


def test_generation_limit_gives_unfilled_places_their_own_groups(tiny_base, tmp_path):
    """Every group has zero variance: max_num_gen_batches 3 = two extra rounds, then each place trains on its own
    first-batch group (advantage 0 under DLER), so the batch keeps its size."""
    trainer, _, logs = _trainer(tiny_base, tmp_path, [lambda completions, **kw: [1.0] * len(completions)],
                                {"max_num_gen_batches": 3})
    outs, scored = _capture(trainer)
    trainer.train()
    assert len(scored) == 3
    (out,) = outs
    assert torch.all(out["advantages"] == 0) and "tool_mask" not in out
    assert int(out["num_items_in_batch"]) == int(out["completion_mask"].sum())
    prompts = [r["prompt"] for r in scored[0]]
    assert [r["prompt"] for r in scored[1]] != prompts
    row = next(x for x in logs if "dler/resample_rounds" in x)
    assert row["dler/resample_rounds"] == 2 and row["dler/extra_generations"] == 32 and row["dler/unfilled_frac"] == 1


def test_trl_loss_is_the_dual_clip(tiny_base, tmp_path):
    """TRL's loss with DLER's settings (epsilon 0.2, epsilon_high 0.28, delta 10) is verl's dual-clip PPO: for A < 0
    the ratio term is bounded at c = 10 (ratio 50 costs -A * 10, not -A * 50); for A > 0 the clip-higher bound."""
    trainer, tok, _ = _trainer(tiny_base, tmp_path, [parity_reward])
    trainer.model.eval()  # TRL's evaluation normaliser: the token count of the batch
    p = tok(["12+34="] * 4, add_special_tokens=False, return_tensors="pt")["input_ids"]
    c = torch.tensor([[5, 6, 7], [8, 9, 5], [6, 7, 8], [9, 5, 6]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 1, 1], [1, 0, 0]])
    with torch.no_grad():
        logps, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, torch.cat([p, c], 1),
                                                                 torch.cat([torch.ones_like(p), mask], 1), 3)
    ratio = torch.tensor([[50.0, 1.1, 0.5], [50.0, 1.5, 1.0], [0.7, 0.9, 1.2], [1.0, 1.0, 1.0]])
    adv = torch.tensor([-1.5, 2.0, -0.5, 0.3])
    inputs = {"prompt_ids": p, "prompt_mask": torch.ones_like(p), "completion_ids": c, "completion_mask": mask,
              "advantages": adv, "old_per_token_logps": logps - ratio.log(),
              "num_items_in_batch": mask.sum()}
    loss = trainer._compute_loss(trainer.model, inputs)
    ctx = TokenContext.build(logps, logps - ratio.log(), adv, mask)
    per_tok, _ = dual_clip_ppo(ctx, 0.2, 0.28, 10.0)
    assert per_tok[0, 0].item() == pytest.approx(1.5 * 10.0, rel=1e-4)     # capped at -A c
    assert per_tok[1, 0].item() == pytest.approx(-2.0 * 1.28, rel=1e-4)    # clip-higher
    assert loss.item() == pytest.approx(float((per_tok * ctx.mask).sum() / mask.sum()), rel=1e-5)
    uncapped = (-adv.unsqueeze(1) * ratio).clone()
    assert loss.item() < float((torch.maximum(uncapped, per_tok) * mask).sum() / mask.sum()) - 1.0


# ------------------------------------------------------------------------------------------------ claim check
def _run(method, seed, values):
    return {"job": {"method": method, "seed": seed},
            "metrics": [{"step": s + 1, "completions/clipped_ratio": v} for s, v in enumerate(values)]}


def test_late_metric_check_reads_the_second_half():
    from harness.claims.papers.dler import dler_late_metric_vs_baseline as chk

    kw = dict(method="dler", baseline="grpo", key="completions/clipped_ratio", direction="lower", start_fraction=0.5)
    # dler truncates more early, less late: only the second half counts
    res = [_run("dler", s, [0.9, 0.9, 0.1, 0.1]) for s in (1, 2)]
    res += [_run("grpo", s, [0.2, 0.2, 0.3, 0.3]) for s in (1, 2)]
    verdict, numbers = chk(res, **kw)
    assert verdict == "reproduced" and numbers["per_seed"][1]["diff"] == pytest.approx(-0.2)
    res[1] = _run("dler", 2, [0.0, 0.0, 0.4, 0.4])
    assert chk(res, **kw)[0] == "not_reproduced"
    assert chk(res[:1] + res[2:3], **kw)[0] == "inconclusive"                       # one seed
    zero = [_run("dler", s, [0, 0, 0, 0]) for s in (1, 2)] + [_run("grpo", s, [0, 0, 0, 0]) for s in (1, 2)]
    assert chk(zero, **kw)[0] == "inconclusive"                                        # nothing to undercut
    with pytest.raises(ValueError, match="valid: lower, higher"):
        chk(res, **{**kw, "direction": "less"})
