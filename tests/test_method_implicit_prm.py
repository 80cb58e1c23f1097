"""Implicit PRM against numbers computed with the authors' code: tests/fixtures/implicit_prm_golden.json, from
PRIME-RL/ImplicitPRM @ c0441755 (``CETrainer.loss_fn``, ``best_of_n``) and PRIME-RL/PRIME @ 18ad596f
(``compute_implicit_reward``, the ``prime_norm`` batch_norm block, ``compute_ce_dpo_loss_rm``,
``compute_dpo_accuracy``, ``compute_rloo_returns`` with verl's ``masked_whiten``). Plus the invariants (pi_theta =
pi_ref gives zero process reward; the summed process reward is beta times the sequence log-ratio), the PRM's CE
training on a tiny synthetic set, the DAG step (``python -m harness.train.prm``), one real GRPO step with the reward
on the tiny smoke model, the claim check and bad input.

Regenerate / re-check the fixture from the authors' code (loaded at run time, none committed):

    git clone https://github.com/PRIME-RL/ImplicitPRM /tmp/ImplicitPRM && git -C /tmp/ImplicitPRM checkout c0441755
    git clone https://github.com/PRIME-RL/PRIME /tmp/PRIME && git -C /tmp/PRIME checkout 18ad596f
    python tests/fixtures/generators/implicit_prm.py /tmp/ImplicitPRM /tmp/PRIME     # --write rewrites `expected`
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from harness.methods import implicit_prm as M
from harness.methods.context import AdvantageContext, RewardContext
from harness.methods.registry import RegistryError, get_method
from conftest import tiny_grpo_trainer

FIX = json.loads((Path(__file__).parent / "fixtures" / "implicit_prm_golden.json").read_text())
CASES = FIX["cases"]
METHOD = get_method("implicit_prm")


def _t(x):
    return torch.tensor(x, dtype=torch.float64)


# ------------------------------------------------------------------------------------------------ golden
def test_fixture_names_its_source():
    assert FIX["source"]["repo"] == M.PRM_REPO and FIX["source"]["commit"] == M.PRM_COMMIT
    assert FIX["source"]["prime"]["repo"] == M.PRIME_REPO and FIX["source"]["prime"]["commit"] == M.PRIME_COMMIT
    assert M.CE_FILE in FIX["source"]["files"] and M.PRIME_ALGOS in FIX["source"]["prime"]["files"]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_ce_loss_matches_authors(case):
    """The CE loss on sigmoid(beta * summed log-ratio): ImplicitPRM's CETrainer (float32 there) and PRIME's
    compute_ce_dpo_loss_rm (token-level, float64)."""
    i, e, beta = case["inputs"], case["expected"], case["hparams"]["beta"]
    mask = _t(i["mask"])
    loss = M.ce_loss((_t(i["logps"]) * mask).sum(1), (_t(i["ref_logps"]) * mask).sum(1), _t(i["labels"]), beta)
    assert loss.item() == pytest.approx(e["prime_ce_loss"], rel=1e-12)
    assert loss.item() == pytest.approx(e["ce_loss"], rel=1e-6)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_process_reward_and_prime_scores_match_authors(case):
    """q_t = log pi - log pi_ref per token (compute_implicit_reward, granularity token), the paper's r_t = beta q_t,
    and the batch_norm scores PRIME feeds to its RLOO (float32 in their code)."""
    i, e, beta = case["inputs"], case["expected"], case["hparams"]["beta"]
    mask = _t(i["mask"])
    q = (_t(i["logps"]) - _t(i["ref_logps"])) * mask
    torch.testing.assert_close(q, _t(e["q"]), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(q, _t(e["token_level_score"]), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(M.process_rewards(_t(i["logps"]), _t(i["ref_logps"]), beta) * mask, beta * q)
    torch.testing.assert_close(M.prime_scores(q, mask, "batch_norm", beta), _t(e["batch_norm_scores"]),
                               rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(M.prime_scores(q, mask, "none", beta), beta * q)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_rloo_advantages_match_authors(case):
    """compute_rloo_returns with both sources, gamma as given, and its masked whitening."""
    i, e, G = case["inputs"], case["expected"], case["group_size"]
    mask = _t(i["mask"])
    adv, ret = M.prime_advantages(_t(i["rloo_scores"]) * mask, _t(i["outcomes"]), mask, G, case["hparams"]["gamma"])
    torch.testing.assert_close(ret * mask, _t(e["rloo_returns"]), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(adv * mask, _t(e["rloo_advantages"]), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_ranking_metrics_match_authors(case):
    """compute_dpo_accuracy (pairwise ranking accuracy) and best_of_n (top-scored sample, first of ties)."""
    i, e, G = case["inputs"], case["expected"], case["group_size"]
    summed = (_t(e["token_level_score"]) * _t(i["mask"])).sum(1)
    assert M.pairwise_accuracy(summed, _t(i["labels"]), G) == pytest.approx(e["dpo_accuracy"], rel=1e-12)
    assert M.best_of_n(i["bon_scores"], i["outcomes"], G)["per_group_bon"] == e["bon_top_correct"]


def test_best_of_n_picks_the_top_score_and_the_mean():
    b = M.best_of_n([0.1, 0.9, 0.2, 0.5, 0.5, -1.0], [0, 1, 0, 0, 1, 1], 3)
    assert b["per_group_bon"] == [1.0, 0.0]                       # group 2: tie 0.5/0.5 -> the first
    assert b["bon"] == 0.5 and b["mean"] == pytest.approx((1 / 3 + 2 / 3) / 2)


# ------------------------------------------------------------------------------------------------ invariants
def _two_models(tiny_base):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ref = AutoModelForCausalLM.from_pretrained(tiny_base).eval()
    prm = AutoModelForCausalLM.from_pretrained(tiny_base).eval()
    with torch.no_grad():
        for p in prm.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    return prm, ref, AutoTokenizer.from_pretrained(tiny_base)


def _some_completions(tok):
    prompts = ["12+30=", "7+8=", "45+45="]
    comps = [tok("42", add_special_tokens=False)["input_ids"] + [tok.eos_token_id],
             tok("16", add_special_tokens=False)["input_ids"],
             tok("90", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]]
    return [M.encode_prompt(tok, p) for p in prompts], comps


def test_equal_models_give_zero_process_reward(tiny_base):
    prm, ref, tok = _two_models(tiny_base)
    p, c = _some_completions(tok)
    a, b = M.sequence_logps(ref, p, c), M.sequence_logps(ref, p, c)
    for x, y in zip(a, b):
        assert torch.equal(M.process_rewards(x, y, 0.05), torch.zeros_like(x))
    mask = torch.ones(1, 3)
    assert M.outcome_reward(a[0][None], b[0][None], mask[:, :a[0].numel()], 0.05).item() == 0.0


def test_summed_process_reward_is_beta_times_sequence_log_ratio(tiny_base):
    """sum_t r_t = beta * (log pi_theta(y|x) - log pi_ref(y|x)), the sequence log-probs taken independently from the
    models' own LM loss on the completion tokens."""
    prm, ref, tok = _two_models(tiny_base)
    p, c = _some_completions(tok)
    beta = 0.05

    def seq_logp(model, pi, ci):
        ids = torch.tensor([pi + ci])
        labels = torch.tensor([[-100] * len(pi) + ci])
        with torch.no_grad():
            return -model(input_ids=ids, labels=labels).loss.item() * len(ci)

    lp, lr = M.sequence_logps(prm, p, c), M.sequence_logps(ref, p, c)
    for pi, ci, x, y in zip(p, c, lp, lr):
        assert x.numel() == len(ci)
        total = float(M.process_rewards(x, y, beta).sum())
        assert total == pytest.approx(beta * (seq_logp(prm, pi, ci) - seq_logp(ref, pi, ci)), rel=1e-4, abs=1e-6)
        assert total != 0.0


# ------------------------------------------------------------------------------------------------ PRM training
def test_prm_training_reduces_the_ce_loss(tiny_base):
    """A tiny synthetic set: the correct sum (label 1) and a wrong one (label 0) for 32 addition prompts; CE training
    of a copy of the base model against it lowers the CE loss and ranks correct answers above wrong ones."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.data import smoke
    from harness.train.prm import train_prm

    tok = AutoTokenizer.from_pretrained(tiny_base)
    prm, ref = AutoModelForCausalLM.from_pretrained(tiny_base), AutoModelForCausalLM.from_pretrained(tiny_base)
    rows = smoke.rows(smoke.split_pairs(512, 1234)[0][:32])
    ex = []
    for r in rows:
        p = M.encode_prompt(tok, r["prompt"])
        for ans, lab in ((r["answer"], 1.0), (str(int(r["answer"]) + 11), 0.0)):
            ex.append({"prompt_ids": p, "completion_ids": tok(ans, add_special_tokens=False)["input_ids"]
                       + [tok.eos_token_id], "label": lab})
    torch.manual_seed(0)
    rec = train_prm(prm, ref, ex, beta=0.5, lr=3e-3, epochs=8, batch_size=16, seed=0, log=lambda m: None)
    assert rec["steps"] == 32 and len(rec["losses"]) == 32
    assert rec["ce_before"] == pytest.approx(math_log2(), abs=1e-6)      # prm = ref at the start: sigma(0) = 0.5
    assert rec["ce_after"] < rec["ce_before"] - 0.05
    lp = M.sequence_logps(prm, [e["prompt_ids"] for e in ex], [e["completion_ids"] for e in ex])
    lr = M.sequence_logps(ref, [e["prompt_ids"] for e in ex], [e["completion_ids"] for e in ex])
    scores = torch.tensor([float((a - b).sum()) for a, b in zip(lp, lr)])
    assert M.pairwise_accuracy(scores, torch.tensor([e["label"] for e in ex]), 2) > 0.6


def math_log2() -> float:
    import math

    return math.log(2.0)


def _tiny_job(tmp_path) -> Path:
    from tests.conftest import TINY_SMOKE

    job = {"tier": "smoke", "method": "implicit_prm", "seed": 3, "hparams": METHOD.resolve({}), "job_key": "0" * 12,
           "trl": {"temperature": 1.0, "max_completion_length": 4}, "model": TINY_SMOKE["model"],
           "data": {"task": "addition", "n_val": 512, "split_seed": 1234}, "eval": {"n_val": 6}}
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job))
    return path


@pytest.fixture(scope="module")
def tiny_prm(tiny_base, tmp_path_factory):
    """The DAG step on the tiny model: ``python -m harness.train.prm`` (main) with a small spec."""
    from harness.train import prm as P

    tmp = tmp_path_factory.mktemp("prm")
    spec = tmp / "spec.json"
    spec.write_text(json.dumps({"kind": "prm", "output": "model", "key": "k", "path": "p", "tier": "smoke",
                                "model": {}, "prompts": 16, "samples": 4, "beta": 0.05, "lr": 1e-3, "epochs": 1,
                                "batch_size": 16, "bon_n": 4, "seed": 0}))
    out = tmp / "model"
    assert P.main(["--job", str(_tiny_job(tmp)), "--model-dir", str(tiny_base), "--out", str(out), "--spec",
                   str(spec)]) == 0
    return out


def test_prm_step_writes_the_model_and_the_best_of_n(tiny_prm, tiny_base):
    meta = json.loads((tiny_prm / M.META_FILE).read_text())
    assert meta["ref_model_dir"] == str(Path(tiny_base).resolve()) and meta["settings"]["beta"] == 0.05
    assert meta["n_examples"] == 64 and meta["steps"] == 4 and len(meta["losses"]) == 4
    bon = json.loads((tiny_prm / "bon.json").read_text())
    assert bon["n"] == 4 and bon["prompts"] == 6 and len(bon["per_prompt"]) == 6
    again = M.best_of_n([s for p in bon["per_prompt"] for s in p["scores"]],
                        [c for p in bon["per_prompt"] for c in p["correct"]], 4)
    assert again["bon"] == pytest.approx(bon["bon_acc"]) and again["mean"] == pytest.approx(bon["mean_acc"])
    assert bon["diff_95ci"][0] <= bon["diff"] <= bon["diff_95ci"][1]


def test_prm_spec_rejects_unknown_settings():
    from harness.train.prm import settings

    with pytest.raises(ValueError, match="unknown setting 'lrate'.*valid: beta, prompts"):
        settings({}, {"kind": "prm", "lrate": 1.0})


# ------------------------------------------------------------------------------------------------ GRPO step
def _train_once(tiny_base, prm_dir, tmp_path, **hp):
    from harness.data import smoke

    trainer, tok, records = tiny_grpo_trainer(tiny_base, tmp_path / "grpo", METHOD,
                                              reward_funcs=[smoke.exact_match_reward],
                                              hparams={"prm_dir": str(prm_dir), **hp}, max_steps=1,
                                              per_device_train_batch_size=32, num_generations=8,
                                              max_completion_length=4, learning_rate=1e-3, temperature=1.0,
                                              loss_type="bnpo", beta=0.0)
    seen: list[dict] = []  # the scored generation batch, in group order (before TRL shuffles it for the loss)
    inner = trainer._score_batch

    def spy(inputs):
        out = inner(inputs)
        seen.append({k: v.detach().clone() for k, v in out.items() if torch.is_tensor(v)})
        return out

    trainer._score_batch = spy
    trainer.train()
    return seen, trainer._last_rewards_per_func.clone(), records, tok


def test_one_grpo_step_with_prime_token_advantages(tiny_base, tiny_prm, tmp_path):
    """mode prime: the trainer's token-level advantages equal PRIME's, recomputed here from the PRM and the
    reference on the batch's own prompts and completions; the method's reward column is 0 (the outcome is the task's)."""
    seen, rpf, logs, tok = _train_once(tiny_base, tiny_prm, tmp_path)
    b = seen[0]
    adv, mask = b["advantages"], b["completion_mask"].float()
    assert adv.shape == b["completion_ids"].shape and rpf.shape == (32, 2)
    assert torch.all(rpf[:, 1] == 0)
    prm, ref, _, beta = M.load_models(str(tiny_prm), None)
    p = [row[m.bool()].tolist() for row, m in zip(b["prompt_ids"], b["prompt_mask"])]
    c = [row[m.bool()].tolist() for row, m in zip(b["completion_ids"], b["completion_mask"])]
    q = torch.zeros_like(mask)
    for i, (x, y) in enumerate(zip(M.sequence_logps(prm, p, c), M.sequence_logps(ref, p, c))):
        q[i, :len(x)] = x - y
    want, _ = M.prime_advantages(M.prime_scores(q, mask, "batch_norm", beta), rpf[:, 0], mask, 8, 1.0)
    torch.testing.assert_close(adv * mask, want * mask, rtol=1e-4, atol=1e-5)
    assert (adv * mask).abs().sum() > 0
    row = next(m for m in logs if "implicit_prm/bon_outcome" in m)
    for k in ("implicit_prm/mean_outcome", "implicit_prm/pair_acc", "implicit_prm/score", "method/frac_tokens_touched"):
        assert k in row
    assert row["implicit_prm/mean_outcome"] == pytest.approx(float(rpf[:, 0].mean()), abs=1e-6)


def test_one_grpo_step_with_the_summed_reward(tiny_base, tiny_prm, tmp_path):
    """mode sum: the method's reward column is process_coef * r_theta(y) with the PRM's training beta."""
    seen, rpf, logs, tok = _train_once(tiny_base, tiny_prm, tmp_path, mode="sum", process_coef=2.0)
    b = seen[0]
    assert b["advantages"].dim() == 1
    prm, ref, _, beta = M.load_models(str(tiny_prm), None)
    p = [row[m.bool()].tolist() for row, m in zip(b["prompt_ids"], b["prompt_mask"])]
    c = [row[m.bool()].tolist() for row, m in zip(b["completion_ids"], b["completion_mask"])]
    want = [2.0 * beta * float((x - y).sum()) for x, y in zip(M.sequence_logps(prm, p, c), M.sequence_logps(ref, p, c))]
    torch.testing.assert_close(rpf[:, 1], torch.tensor(want, dtype=rpf.dtype), rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------------------------------------ claim check
def test_bon_claim_check():
    from harness.claims.registry import all_checks

    fn = all_checks()["implicit_prm_bon_above_mean"]
    res = lambda seed, d: {"job": {"method": "implicit_prm", "seed": seed}, "metrics": [  # noqa: E731
        {"step": s, "implicit_prm/bon_outcome": 0.5 + d + 0.01 * (s % 3), "implicit_prm/mean_outcome": 0.5}
        for s in range(1, 41)]}
    v, n = fn([res(1, 0.1), res(2, 0.12), res(3, 0.08)], method="implicit_prm")
    assert v == "reproduced" and n["n_steps"] == 40 and n["ci"][0] > 0
    v, _ = fn([res(1, -0.1), res(2, -0.12), res(3, -0.08)], method="implicit_prm")
    assert v == "not_reproduced"
    v, n = fn([], method="implicit_prm")
    assert v == "inconclusive" and "no runs" in n["reason"]


# ------------------------------------------------------------------------------------------------ bad input
def test_unknown_mode_and_norm_name_the_valid_choices():
    with pytest.raises(ValueError, match="unknown mode 'dense'; valid: prime, sum"):
        METHOD.hook("reward")(RewardContext(prompts=[], completions=[], completion_ids=[], group_size=2),
                              **METHOD.resolve({"mode": "dense"}))
    with pytest.raises(ValueError, match="unknown prime_norm 'z'; valid: batch_norm, none"):
        M.prime_scores(torch.zeros(2, 2), torch.ones(2, 2), "z", 0.05)
    with pytest.raises(RegistryError, match="no hyperparameter 'bta'"):
        METHOD.resolve({"bta": 1.0})


def test_missing_prm_dir_is_a_clear_error():
    with pytest.raises(ValueError, match="prm_dir is not set"):
        METHOD.hook("reward")(RewardContext(prompts=["1+1="], completions=["2"], completion_ids=[[5]], group_size=1),
                              **METHOD.resolve({}))


def test_advantage_hook_refuses_rows_it_did_not_score():
    M._PENDING[:] = [((5, 2), torch.zeros(2))]
    M._BETA[:] = [0.05]
    actx = AdvantageContext(rewards=torch.zeros(2), group_size=2, mask=torch.ones(2, 2),
                            completion_ids=torch.tensor([[5, 2], [6, 2]]))
    with pytest.raises(RuntimeError, match="scored 1 completions, the advantage hook sees 2"):
        METHOD.hook("advantage")(actx, **METHOD.resolve({}))
    M._PENDING[:] = [((5, 2), torch.zeros(2)), ((7, 2), torch.zeros(2))]
    with pytest.raises(RuntimeError, match="row 1 .* not the completion"):
        METHOD.hook("advantage")(actx, **METHOD.resolve({}))
    M._PENDING.clear()


def test_prime_advantages_need_whole_groups():
    with pytest.raises(ValueError, match="whole groups of >= 2"):
        M.prime_advantages(torch.zeros(3, 2), torch.zeros(3), torch.ones(3, 2), 2)
    with pytest.raises(ValueError, match="not whole groups"):
        M.best_of_n([1.0, 2.0, 3.0], [0, 1, 0], 2)
