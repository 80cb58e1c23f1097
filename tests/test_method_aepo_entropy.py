"""AEPO (arXiv 2510.08141): golden values from the authors' code (597358816/AEPO @ b353a054, ``RayPPOTrainer.fit``'s
``alg == "AEPO"`` block run as written on stub batches, with ``_select_by_advantage``, ``compute_advantage``,
``compute_grpo_outcome_advantage`` and ``masked_mean``: tests/fixtures/generators/aepo_entropy.py), invariants
(entropy exactly at the target, R = 0 / alpha = 0 is GRPO), the rollout's layout and one-step lag, bad settings, and
one real training step through the trainer."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from harness.methods import aepo_entropy as ae
from harness.methods.context import AdvantageContext, BatchContext, RolloutContext
from harness.methods.registry import RegistryError, get_method
from conftest import tiny_grpo_trainer

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "aepo_entropy_golden.json").read_text())
CASES = {c["name"]: c for c in FIXTURE["cases"]}


def _grpo_adv(scores: list[float], g: int) -> torch.Tensor:
    r = torch.tensor(scores, dtype=torch.float32)
    z = torch.zeros(len(scores), 1)
    return AdvantageContext(rewards=r, group_size=g, mask=z, completion_ids=z.long()).grpo_advantages()


def _scored(case: dict, hp: dict, *, below: bool | None = None):
    """The harness layout of a fixture case: the tempered groups first, then the main batch, TRL's GRPO advantages
    per group; returns the data hook's decision and the row labels."""
    i, g = case["inputs"], case["group_size"]
    if below is None:
        below = ae.choose_temperature(i["entropy"], hp["entropy_base"], hp["temperature_high"],
                                      hp["temperature_low"], hp["variant"])[1]
    t, m = i["tempered_scores"], i["main_scores"]
    rewards = torch.tensor(t + m)
    adv = torch.cat([_grpo_adv(t, g), _grpo_adv(m, g)])
    labels = [["tempered", j] for j in range(len(t))] + [["main", j] for j in range(len(m))]
    rows = [{"prompt": "p", ae.ROLE: lab[0], ae.BELOW: below} for lab in labels]
    bctx = BatchContext(stage="scored", group_size=g, rows=rows, rewards=rewards, advantages=adv)
    return ae.aepo_data(bctx, **hp), labels, adv


def _hp(case: dict, name: str = "aepo_entropy", **over) -> dict:
    hp = get_method(name).resolve({k: v for k, v in case["hparams"].items()})
    hp.update(over)
    return hp


# ------------------------------------------------------------------------------------------------ golden
@pytest.mark.parametrize("name", [n for n, c in CASES.items() if "error" not in c["expected"]])
def test_training_rows_and_advantages_match_authors_code(name):
    case = CASES[name]
    exp, hp = case["expected"], _hp(case)
    t, _ = ae.choose_temperature(case["inputs"]["entropy"], hp["entropy_base"], hp["temperature_high"],
                                 hp["temperature_low"])
    assert t == exp["temperature"]
    n_prompts = len(case["inputs"]["main_scores"]) // case["group_size"]
    assert ae.n_tempered(n_prompts + exp["regenerated_prompts"], hp["resample_share"]) == exp["regenerated_prompts"]
    dec, labels, adv = _scored(case, hp)
    trained = [lab for lab, k in zip(labels, dec.keep.tolist()) if k]
    assert trained == exp["trained_rows"]
    eff = (adv * dec.weights)[dec.keep]
    assert eff.tolist() == pytest.approx(exp["trained_advantages"], rel=2e-3, abs=1e-6)  # TRL eps 1e-4, verl 1e-6
    main = _grpo_adv(case["inputs"]["main_scores"], case["group_size"])
    assert main.tolist() == pytest.approx(exp["main_advantages"], rel=2e-3, abs=1e-6)
    assert dec.metrics["aepo_entropy/replaced_rows"] == sum(lab[0] == "tempered" for lab in exp["trained_rows"])


def test_no_positive_the_authors_code_fails_here_grpo_trains():
    """Deviation: with no tempered positive ``_select_by_advantage`` returns None and ``fit`` raises; here the
    step trains the main batch as GRPO."""
    case = CASES["no_positives"]
    assert case["expected"]["error"] == "AttributeError"
    dec, labels, adv = _scored(case, _hp(case))
    assert [lab[0] for lab, k in zip(labels, dec.keep.tolist()) if k] == ["main"] * len(case["inputs"]["main_scores"])
    assert torch.equal(dec.weights, torch.ones_like(dec.weights))


@pytest.mark.parametrize("name", sorted(CASES))
def test_entropy_measure_is_the_actors_entropy_loss(name):
    """``-masked_mean(log_probs, response_mask)`` of dp_actor.py: the mean negative log-likelihood of the tokens."""
    i = CASES[name]["inputs"]
    logps = [torch.tensor(row[:n]) for row, n in zip(i["log_probs"], i["log_prob_lengths"])]
    rctx, logged = _ctx(len(logps), logps=logps)  # one group: no tempered rows, every row is measured
    ae.aepo_rollout(["a"] * len(logps), rctx, **get_method("aepo_entropy").resolve())
    assert logged["aepo_entropy/entropy_now"] == pytest.approx(CASES[name]["expected"]["entropy_measure"], rel=1e-6)


def test_fixture_covers_every_branch():
    exp = {n: c["expected"] for n, c in CASES.items()}
    assert {e["temperature"] for e in exp.values()} == {0.8, 1.2}
    assert CASES["at_target"]["inputs"]["entropy"] == CASES["at_target"]["hparams"]["entropy_base"]
    replaced = {n: sum(r[0] == "tempered" for r in e.get("trained_rows", [])) for n, e in exp.items()}
    assert replaced["below_target"] == 3 and replaced["above_target"] == 1 and replaced["r_zero"] == 0
    assert replaced["fewer_positives_than_r"] > 3
    assert FIXTURE["source"].startswith(f"{ae.REPO}@{ae.COMMIT}")


# ------------------------------------------------------------------------------------------------ invariants
def test_entropy_exactly_at_target_code_samples_hot_paper_cold():
    assert ae.choose_temperature(0.5, 0.5, 1.2, 0.8, "code") == (1.2, True)
    assert ae.choose_temperature(0.5, 0.5, 1.2, 0.8, "paper") == (0.8, False)
    assert ae.choose_temperature(0.6, 0.5, 1.2, 0.8, "code") == (0.8, False)


@pytest.mark.parametrize("name,over", [("aepo_entropy", {"reinforce_sample_num": 0}),
                                       ("aepo_entropy_paper", {"alpha": 0.0})])
def test_no_reinforce_weight_is_grpo_on_the_main_batch(name, over):
    case = CASES["below_target"]
    dec, labels, adv = _scored(case, _hp(case, name, **over))
    assert [lab for lab, k in zip(labels, dec.keep.tolist()) if k] == [lab for lab in labels if lab[0] == "main"]
    assert torch.equal(dec.weights, torch.ones_like(dec.weights))  # main advantages untouched


def test_paper_variant_adds_every_positive_with_alpha_and_keeps_the_batch():
    case = CASES["below_target"]
    dec, labels, adv = _scored(case, _hp(case, "aepo_entropy_paper", alpha=0.3))
    pos = [j for j, a in enumerate(adv[:8].tolist()) if a > 0.05]
    assert [lab for lab, k in zip(labels, dec.keep.tolist()) if k][:len(pos)] == [["tempered", j] for j in pos]
    assert all(dec.keep[8:])
    assert (adv * dec.weights)[pos].tolist() == pytest.approx([0.3] * len(pos))


def test_above_target_halves_the_replaced_rows():
    case = CASES["below_target"]
    hp = _hp(case, reinforce_sample_num=60)
    lo, _, _ = _scored(case, hp, below=True)
    hi, _, _ = _scored(case, hp, below=False)
    n = lo.metrics["aepo_entropy/positives"]
    assert lo.metrics["aepo_entropy/replaced_rows"] == n and hi.metrics["aepo_entropy/replaced_rows"] == n // 2
    assert hi.metrics["aepo_entropy/main_rows_dropped"] == n // 2


# ------------------------------------------------------------------------------------------------ rollout hook
def _ctx(g, logps=None, training=True, gen=None):
    logged, calls = {}, []

    def generate(ids, **kw):
        calls.append((len(ids), kw.get("temperature")))
        return [[7, 8] for _ in ids]

    def token_stats(p, c):
        lp = logps if logps is not None else [torch.full((len(x),), -0.25) for x in c]
        lp = (lp * len(c))[:len(c)] if len(lp) < len(c) else lp
        return lp, [torch.full((len(x),), 0.5) for x in lp]

    rctx = RolloutContext(generator=gen if gen is not None else torch.Generator(), step=0, max_steps=1, group_size=g,
                          processing_class=None, training=training, tokenize=lambda ps: [[ord(p[0])] for p in ps],
                          generate=generate, token_stats=token_stats, log_metric=lambda k, v: logged.__setitem__(k, v))
    rctx.calls = calls
    return rctx, logged


def test_prompts_stage_puts_copies_of_the_first_prompts_first():
    rows = [{"prompt": f"p{j}"} for j in range(10)]
    dec = ae.aepo_data(BatchContext(stage="prompts", group_size=2, rows=rows), **get_method("aepo_entropy").resolve())
    assert [r["prompt"] for r in dec.rows] == ["p0", "p1"] + [f"p{j}" for j in range(8)]
    assert ae.aepo_data(BatchContext(stage="prompts", group_size=2, rows=rows[:4]),
                        **get_method("aepo_entropy").resolve()) is None  # fewer than 5 groups: no tempered group


def test_rollout_samples_tempered_groups_and_lags_the_entropy_by_one_step():
    hp = get_method("aepo_entropy").resolve({"entropy_base": 0.3})
    gen = torch.Generator()
    prompts = [p for p in ["a", "a", "b", "c", "d", "a", "b", "c", "d", "e"] for _ in range(2)]  # wrong layout: 0
    rctx, logged = _ctx(2, gen=gen)
    out = ae.aepo_rollout(prompts, rctx, **hp)
    assert out[ae.ROLE] == ["main"] * 20 and logged["aepo_entropy/tempered_rows"] == 0
    ae._LAST.pop(id(gen), None)
    prompts = [p for p in ["a", "b"] + list("abcdefgh") for _ in range(2)]  # the prompts stage's layout, k = 2
    rctx, logged = _ctx(2, gen=gen)
    out = ae.aepo_rollout(prompts, rctx, **hp)
    assert out[ae.ROLE] == ["tempered"] * 4 + ["main"] * 16 and len(out["completion_ids"]) == 20
    assert rctx.calls == [(4, 1.2), (16, None)]  # first step: entropy 0 <= 0.3, hot
    assert logged["aepo_entropy/entropy"] == 0.0 and logged["aepo_entropy/entropy_now"] == pytest.approx(0.25)
    rctx, logged = _ctx(2, gen=gen, logps=[torch.full((2,), -0.5)])
    ae.aepo_rollout(prompts, rctx, **hp)
    assert logged["aepo_entropy/entropy"] == pytest.approx(0.25)  # the previous step's measure, 0.25 <= 0.3: hot
    assert rctx.calls[0] == (4, 1.2) and logged["aepo_entropy/entropy_now"] == pytest.approx(0.5)
    rctx, logged = _ctx(2, gen=gen)
    ae.aepo_rollout(prompts, rctx, **hp)
    assert rctx.calls[0] == (4, 0.8) and logged["aepo_entropy/below_target"] == 0.0  # 0.5 > 0.3: cold
    hp_e = get_method("aepo_entropy").resolve({"entropy_measure": "entropy"})
    rctx, logged = _ctx(2)
    ae.aepo_rollout(prompts, rctx, **hp_e)
    assert logged["aepo_entropy/entropy_now"] == pytest.approx(0.5)  # full-distribution entropy from token_stats


def test_evaluation_rollout_is_plain_generation():
    rctx, logged = _ctx(2, training=False)
    out = ae.aepo_rollout(["a", "a", "b", "b"], rctx, **get_method("aepo_entropy").resolve())
    assert rctx.calls == [(4, None)] and ae.ROLE not in out and not logged


# ------------------------------------------------------------------------------------------------ bad input
def test_bad_settings_name_the_valid_choices():
    hp = get_method("aepo_entropy").resolve()
    rctx, _ = _ctx(2)
    with pytest.raises(ValueError, match="code, paper"):
        ae.aepo_rollout(["a", "a"], rctx, **{**hp, "variant": "dcpo"})
    with pytest.raises(ValueError, match="nll, entropy"):
        ae.aepo_data(BatchContext(stage="prompts", group_size=2, rows=[]), **{**hp, "entropy_measure": "x"})
    with pytest.raises(ValueError, match="temperature_low must be > 0"):
        ae.aepo_rollout(["a", "a"], rctx, **{**hp, "temperature_low": 0.0})
    with pytest.raises(RegistryError, match="entropy_base must be float"):
        get_method("aepo_entropy").resolve({"entropy_base": "high"})
    with pytest.raises(RegistryError, match="valid: alpha"):
        get_method("aepo_entropy").resolve({"target": 0.5})


def test_defaults_are_the_authors_release():
    hp = get_method("aepo_entropy").resolve()
    assert (hp["entropy_base"], hp["temperature_high"], hp["temperature_low"], hp["reinforce_sample_num"],
            hp["positive_threshold"], hp["resample_share"], hp["variant"]) == (0.5, 1.2, 0.8, 60, 0.05, 0.25, "code")
    assert get_method("aepo_entropy_paper").resolve()["variant"] == "paper"
    assert all(ae.CODE in h.source or "README" in h.source for h in get_method("aepo_entropy").hparams.values())


# ------------------------------------------------------------------------------------------------ trainer
def parity_reward(completions, **kw):
    return [float(sum(map(ord, c)) % 2) for c in completions]


def test_one_real_training_step(tiny_base, tmp_path):
    trainer, _, logs = tiny_grpo_trainer(tiny_base, tmp_path / "t", "aepo_entropy", reward_funcs=[parity_reward],
                                         hparams={"reinforce_sample_num": 2}, per_device_train_batch_size=20,
                                         num_generations=4, max_completion_length=4, max_steps=2, learning_rate=1e-4,
                                         beta=0.0, loss_type="bnpo")
    model = trainer.model
    before = [p.detach().clone() for p in model.parameters()]
    trainer.train()
    step = [m for m in logs if "aepo_entropy/temperature" in m]
    assert len(step) == 2
    assert step[0]["aepo_entropy/temperature"] == 1.2 and step[0]["aepo_entropy/entropy"] == 0.0  # first step: hot
    assert step[0]["aepo_entropy/tempered_rows"] == 4.0  # 5 groups of 4 = 1 tempered + 4 main
    assert step[1]["aepo_entropy/entropy"] == pytest.approx(step[0]["aepo_entropy/entropy_now"])  # one-step lag
    assert all("aepo_entropy/replaced_rows" in m and m["aepo_entropy/replaced_rows"] <= 2 for m in step)
    # s tempered positives in, s main rows and the other tempered rows out: 16 of 20 rows train
    assert all(m["data/kept_frac"] == pytest.approx(0.8) for m in step)
    assert all(math.isfinite(m["loss"]) for m in logs if "loss" in m)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
