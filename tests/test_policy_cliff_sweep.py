"""The Policy Cliff's tiny-LM sweep (claim 2 of replications/policy_cliff/card.yaml): the reward of each sweep point
(harness/methods/policy_cliff.py) against hand-computed values, the 14 registered sweep points, the per-checkpoint
check-step rate on a tiny reasoning model (harness/analyze/cliff_sweep.py ``measure``), the collector on synthetic
records (hand-computed jumps, spreads and slopes; an incomplete sweep is an error naming what is missing) and the
claim check reading the collected file (reproduced / not reproduced / inconclusive)."""
from __future__ import annotations

import json
import math
import re

import pytest

from harness.analyze import cliff_sweep as CS
from harness.analyze.record import analysis_record, write_analysis
from harness.claims.papers.policy_cliff import policy_cliff_jump
from harness.config import load_card
from harness.data import reasoning as R
from harness.methods import policy_cliff as PC
from harness.methods.context import RewardContext
from harness.methods.registry import get_method
from conftest import tiny_grpo_trainer

GRID = [-0.2, -0.1, -0.05, 0.0, 0.05, 0.1, 0.2]
CHECKED = " then 7+5=12 check 7+5=12 then 12+9=21 so \\boxed{21}"      # correct, with a check step
PLAIN = " then 7+5=12 then 12+9=21 so \\boxed{21}"                      # correct, none
WRONG_CHECKED = " then 7+5=12 check 7+5=12 then 12+9=20 so \\boxed{20}"  # wrong, with a check step
UNBOXED_CHECKED = " then 7+5=12 check 7+5=12 then 12+9=21"              # no answer (truncated), with a check step


def _card_claim():
    claims = load_card("policy_cliff")["claims"]
    return next(c for c in claims if c["id"] == "lm_sweep_step_without_bonus_smooth_with_it")


# ---------------------------------------------------------------------------------------------- reward ------
@pytest.mark.parametrize("eps,check,plain", [(-0.2, 0.8, 1.2), (-0.05, 0.95, 1.05), (0.0, 1.0, 1.0),
                                             (0.05, 1.05, 0.95), (0.2, 1.2, 0.8)])
def test_reward_hand_values(eps, check, plain):
    log = {}
    rctx = RewardContext(prompts=["7+5+9="] * 4, completions=[CHECKED, PLAIN, WRONG_CHECKED, UNBOXED_CHECKED],
                         completion_ids=[[1]] * 4, group_size=4, answers=["21"] * 4,
                         log_metric=lambda k, v: log.setdefault(k, []).append(v))
    name = PC.point_name(eps, bonus=False)
    m = get_method(name)
    r = m.hook("reward")(rctx, **m.hook_hparams())
    assert r == [pytest.approx(check, abs=1e-12), pytest.approx(plain, abs=1e-12), 0.0, 0.0]
    # eps > 0 favours checking, eps < 0 not checking, a tie at 0
    assert (r[0] > r[1]) == (eps > 0) and (r[0] < r[1]) == (eps < 0)
    assert log == {"policy_cliff/check_frac": [0.75], "policy_cliff/correct_check_frac": [0.25],
                   "policy_cliff/correct_plain_frac": [0.25]}
    # the bonus half of the sweep has the same reward (the bonus is TRL's entropy_coef, not the hook's)
    b = get_method(PC.point_name(eps, bonus=True))
    assert b.hook("reward")(rctx, **b.hook_hparams()) == r


def test_reward_needs_answers_and_text():
    with pytest.raises(ValueError, match="needs the dataset's answer column"):
        PC.cliff_reward_values([CHECKED], None, 0.1)
    with pytest.raises(ValueError, match="must be text"):
        PC.cliff_reward_values([[{"role": "assistant", "content": CHECKED}]], ["21"], 0.1)
    with pytest.raises(ValueError, match="1 completions but 2 answers"):
        PC.cliff_reward_values([CHECKED], ["21", "3"], 0.1)


def test_check_step_definition_is_the_tasks():
    """The method states the task's definition (the methods stage may not import the task): the two agree."""
    texts = [CHECKED, PLAIN, WRONG_CHECKED, UNBOXED_CHECKED, "check 1+2=3 so \\boxed{3}", " then 1+2=3 check",
             " then 1+2=3 rechecked so \\boxed{3}", "", "  ", " so \\boxed{check}", " then 3+4=7  check  3+4=7"]
    got = [PC.has_check(t) for t in texts]
    assert got == [R.has_check(t) for t in texts]
    assert got == [True, False, True, True, True, True, False, False, False, False, True]
    # the task's check step decodes to a word that the definition sees
    tok = R.build_tokenizer()
    ids = tok(CHECKED, add_special_tokens=False)["input_ids"]
    assert tok.convert_tokens_to_ids(" check ") in ids and R.has_check(tok.decode(ids, skip_special_tokens=True))


# ---------------------------------------------------------------------------------------- registration ------
def test_fourteen_sweep_points_are_registered_with_their_eps_and_coefficient():
    names = {f"cliff{b}_{p}": (e, c) for b, c in (("", 0.0), ("_bonus", 0.01))
             for e, p in zip(GRID, ("m20", "m10", "m05", "0", "p05", "p10", "p20"))}
    assert PC.SWEEP == names and len(names) == 14
    card = load_card("policy_cliff")
    for name, (eps, coef) in names.items():
        assert re.fullmatch(r"[A-Za-z0-9_]+", name)  # a path part and a Snakemake wildcard
        m = get_method(name)
        assert m.paper == "policy_cliff" and m.point == "reward" and m.task_reward_weight == 0.0
        assert m.resolve() == {"eps": eps, "entropy_coef": coef}
        assert m.hparams["entropy_coef"].trl and not m.hparams["eps"].trl
        assert m.hook_hparams() == {"eps": eps}
        assert all(hp.unit and hp.source for hp in m.hparams.values())
        assert card["methods"][name] == {"eps": eps, "entropy_coef": coef}  # the card states every value
    assert set(card["methods"]) == {"grpo", *names}


def test_jobs_carry_the_coefficient_as_a_trl_setting():
    from harness.plan import resolve_job

    jobs = {n: resolve_job("policy_cliff", "smoke-reasoning", n, 42, check_trl=True)
            for n in ("cliff_p05", "cliff_bonus_p05", "grpo")}
    assert jobs["cliff_p05"]["trl"]["entropy_coef"] == 0.0 and jobs["cliff_bonus_p05"]["trl"]["entropy_coef"] == 0.01
    assert "entropy_coef" not in jobs["grpo"]["trl"]
    no_coef = [{k: v for k, v in jobs[n]["trl"].items() if k != "entropy_coef"}
               for n in ("cliff_p05", "cliff_bonus_p05")]
    assert no_coef[0] == no_coef[1] == jobs["grpo"]["trl"]  # else the tier's GRPO job
    assert jobs["cliff_p05"]["hparams"]["eps"] == 0.05


def test_card_block_matches_the_registered_sweep():
    card = load_card("policy_cliff")
    block = card["tiers"]["smoke-reasoning"]["analysis"]["cliff_sweep"]
    s = CS.parse_settings(block)
    assert s["methods"] == list(PC.SWEEP) and s["eps"] == GRID and s["taus"] == [0.0, 0.01]
    assert (s["prompts"], s["seed"]) == (512, 0)
    assert {(card["methods"][m]["entropy_coef"], card["methods"][m]["eps"]) for m in s["methods"]} == \
        {(t, e) for t in s["taus"] for e in s["eps"]}
    assert _card_claim()["params"] == {"analysis": "cliff_sweep", "jump_min": 0.5, "smooth_max": 0.25, "min_seeds": 3}
    assert "cliff" in card["tiers"]["smoke-reasoning"]["analysis"]  # the bandit block is still inherited


@pytest.mark.parametrize("raw,needle", [
    ({"methods": ["a"], "eps": [0.0, 0.1], "taus": [0.0]}, "eps must contain 0 with a grid point on each side"),
    ({"methods": ["a"], "eps": [-0.1, 0.1, 0.0], "taus": [0.0]}, "strictly increasing"),
    ({"methods": ["a"], "eps": [-0.1, 0.0, 0.1], "taus": [-0.01]}, "taus must be distinct"),
    ({"methods": [], "eps": [-0.1, 0.0, 0.1], "taus": [0.0]}, "methods must be a non-empty list"),
    ({"methods": ["a"], "eps": [-0.1, 0.0, 0.1], "taus": [0.0], "prompts": 0}, "prompts must be an integer"),
    ({"methods": ["a"], "eps": [-0.1, 0.0, 0.1], "taus": [0.0], "samples": 4}, "unknown key 'samples'"),
])
def test_bad_settings_are_named(raw, needle):
    with pytest.raises(ValueError, match=re.escape(needle)):
        CS.parse_settings(raw)


# ------------------------------------------------------------------------------------------- collector ------
SEEDS = (1, 7, 42)
#: check rates per seed (1, 7, 42) over GRID: without the bonus a step across 0, with it flat but noisy
FLAT = [[0.1, 0.1, 0.1], [0.1, 0.2, 0.1], [0.2, 0.1, 0.3], [0.5, 0.4, 0.6], [0.9, 0.8, 0.7], [0.9, 0.9, 0.9],
        [1.0, 1.0, 1.0]]
BONUS = [[0.55] * 3, [0.55] * 3, [0.5, 0.6, 0.55], [0.55] * 3, [0.6, 0.5, 0.65], [0.55] * 3, [0.55] * 3]
PROTO = {"prompts": 512, "seed": 0, "samples_per_prompt": 1, "temperature": 1.0, "max_new_tokens": 80}


def _record(method, seed, rate, *, eps=None, coef=None, proto=PROTO):
    e, c = PC.SWEEP[method]
    result = {"check_rate": rate, "accuracy": 0.8, "train_steps": 100,
              "sweep_point": {"eps": e if eps is None else eps, "entropy_coef": c if coef is None else coef}}
    return analysis_record("cliff_sweep", proto, result, source={"method": method, "seed": seed,
                                                                 "tier": "smoke-reasoning", "job_key": "k" * 12})


def _records(flat=FLAT, bonus=BONUS):
    out = []
    for table, b in ((flat, False), (bonus, True)):
        for e, rates in zip(GRID, table):
            out += [_record(PC.point_name(e, b), s, r) for s, r in zip(SEEDS, rates)]
    return out


def _settings():
    return load_card("policy_cliff")["tiers"]["smoke-reasoning"]["analysis"]["cliff_sweep"]


def test_collector_hand_computed_curves():
    r = CS.collect(_records(), _settings())
    flat, bonus = r["curves"]["unregularised"], r["curves"]["tau=0.01"]
    assert flat["tau"] == 0.0 and bonus["tau"] == 0.01 and flat["eps"] == GRID
    # per-seed jumps between eps -0.05 and +0.05: 0.9-0.2, 0.8-0.1, 0.7-0.3 = 0.7, 0.7, 0.4
    assert flat["jumps"] == pytest.approx([0.7, 0.7, 0.4], abs=1e-12) and flat["jump_seeds"] == [1, 7, 42]
    assert flat["jump_tv"] == pytest.approx(0.6, abs=1e-12)
    assert flat["jump_tv_sd"] == pytest.approx(math.sqrt((0.01 + 0.01 + 0.04) / 2), abs=1e-12)  # ddof 1: 0.1732
    assert flat["jump_target_rate"] == pytest.approx(0.6, abs=1e-12) and flat["n_seeds"] == 3
    assert flat["target_rate"] == pytest.approx([0.1, 0.4 / 3, 0.2, 0.5, 0.8, 0.9, 1.0], abs=1e-12)
    assert flat["target_rate_sd"][0] == pytest.approx(0.0, abs=1e-12)
    assert flat["target_rate_sd"][2] == pytest.approx(0.1, abs=1e-12)  # 0.2, 0.1, 0.3
    assert flat["n_runs"] == [3] * 7 and flat["rates"][4] == {"1": 0.9, "7": 0.8, "42": 0.7}
    # neighbouring mean-rate changes / eps steps: 0.333, 1.333, 6, 6, 2, 1 -> 6; the L1 of (rate, 1 - rate): twice
    assert flat["max_rate_slope"] == pytest.approx(6.0, abs=1e-9)
    assert flat["max_l1_slope"] == pytest.approx(12.0, abs=1e-9)
    assert flat["tv_to_eps0"][0] == pytest.approx(0.4, abs=1e-12)
    # with the bonus: signed changes +0.1, -0.1, +0.1: TV 0.1 (sd 0), signed mean 0.1 / 3
    assert bonus["jumps"] == pytest.approx([0.1, -0.1, 0.1], abs=1e-12)
    assert bonus["jump_tv"] == pytest.approx(0.1, abs=1e-12) and bonus["jump_tv_sd"] == pytest.approx(0, abs=1e-12)
    assert bonus["jump_target_rate"] == pytest.approx(0.1 / 3, abs=1e-12)
    assert bonus["max_rate_slope"] == pytest.approx(0.1 / 3 / 0.05, abs=1e-9)  # 0.55 -> 0.5833 -> 0.55
    assert len(r["runs"]) == 42 and r["runs"]["cliff_bonus_p05/seed7"]["check_rate"] == 0.5


def test_an_incomplete_sweep_is_an_error_naming_what_is_missing():
    recs = [x for x in _records() if x["source"]["method"] != "cliff_bonus_p05"]
    with pytest.raises(ValueError, match=re.escape("sweep points without a run: tau 0.01 eps +0.05; methods without "
                                                   "a record: cliff_bonus_p05")):
        CS.collect(recs, _settings())
    with pytest.raises(ValueError, match=r"two runs of the sweep point tau 0, eps -0.2, seed 1"):
        CS.collect(_records() + [_record("cliff_m20", 1, 0.3)], _settings())
    off = [x for x in _records() if x["source"]["method"] != "cliff_p05"] + [
        _record("cliff_p05", s, 0.5, eps=0.06) for s in SEEDS]
    with pytest.raises(ValueError, match=r"cliff_p05/seed1 \(eps 0.06, entropy_coef 0.0\) is off the grid"):
        CS.collect(off, _settings())
    with pytest.raises(ValueError, match="a record of method 'grpo'"):
        CS.collect(_records() + [analysis_record("cliff_sweep", PROTO, {}, source={"method": "grpo", "seed": 1})],
                   _settings())
    other = [_record(x["source"]["method"], x["source"]["seed"], x["result"]["check_rate"],
                     proto={**PROTO, "prompts": 256}) for x in _records()]
    with pytest.raises(ValueError, match="measured on 256 prompts with seed 0; the settings ask for 512"):
        CS.collect(other, _settings())
    with pytest.raises(ValueError, match="2 protocols"):
        CS.collect(_records()[:-1] + other[-1:], _settings())
    with pytest.raises(ValueError, match="no per-checkpoint records"):
        CS.collect([], _settings())


def test_seeds_are_paired_across_the_jump():
    """A seed missing at one side of the jump leaves the pairs of the others (n_seeds 2: the check says so)."""
    recs = [x for x in _records() if not (x["source"]["method"] == "cliff_p05" and x["source"]["seed"] == 42)]
    flat = CS.collect(recs, _settings())["curves"]["unregularised"]
    assert flat["n_seeds"] == 2 and flat["jump_seeds"] == [1, 7] and flat["jump_tv"] == pytest.approx(0.7)
    assert flat["jump_tv_sd"] == pytest.approx(0.0, abs=1e-12) and flat["n_runs"][4] == 2
    claim = _card_claim()
    v, numbers = policy_cliff_jump([], analyses=[_collected(recs)], **claim["params"])
    assert v == "inconclusive" and "fewer than 3 seeds behind unregularised" in numbers["reason"]


def _collected(recs):
    rec = analysis_record("cliff_sweep", CS.parse_settings(_settings()), CS.collect(recs, _settings()),
                          source={"paper": "policy_cliff", "tier": "smoke-reasoning"})
    return {**rec, "content_hash": "h"}


# -------------------------------------------------------------------------------------------- the check ------
def test_the_claim_check_reads_the_collected_curves():
    claim = _card_claim()
    v, numbers = policy_cliff_jump([], analyses=[_collected(_records())], **claim["params"])
    assert v == "reproduced", numbers
    assert numbers["jumps_without_bonus"] == {"unregularised": True}
    assert numbers["continuous_with_bonus"] == {"tau=0.01": True}
    assert numbers["curves"]["unregularised"]["jump_tv"] == pytest.approx(0.6)
    assert numbers["curves"]["unregularised"]["n_seeds"] == 3
    # no step without the bonus (the step moved away from 0): not reproduced
    late = [r[:] for r in FLAT]
    late[2], late[4] = [0.2, 0.1, 0.3], [0.3, 0.2, 0.4]  # jumps 0.1 each
    assert policy_cliff_jump([], analyses=[_collected(_records(flat=late))], **claim["params"])[0] == "not_reproduced"
    # a step with the bonus too: not reproduced
    steep = [r[:] for r in BONUS]
    steep[2], steep[4] = [0.2, 0.2, 0.2], [0.6, 0.6, 0.6]  # TV 0.4 > 0.25
    v, numbers = policy_cliff_jump([], analyses=[_collected(_records(bonus=steep))], **claim["params"])
    assert v == "not_reproduced" and numbers["continuous_with_bonus"] == {"tau=0.01": False}


def test_verdict_judges_claim_2_from_the_collected_file(tmp_path):
    from harness.analyze.cliff import run as run_cliff, settings_arg as cliff_settings
    from harness.claims.verdict import build_verdict

    work = tmp_path / "work" / "analysis" / "policy_cliff" / "smoke-reasoning"
    paths = []
    for i, rec in enumerate(_records()):
        p = tmp_path / "ck" / f"{i}.json"
        p.parent.mkdir(exist_ok=True)
        write_analysis(rec, p)
        paths.append(p)
    assert CS.main(["collect", *map(str, paths), "--settings", "policy_cliff:smoke-reasoning",
                    "--out", str(work / "cliff_sweep.json")]) == 0
    sweep = json.loads((work / "cliff_sweep.json").read_text())
    assert sweep["source"] == {"paper": "policy_cliff", "tier": "smoke-reasoning"} and len(sweep["inputs"]) == 42
    settings, _ = cliff_settings("policy_cliff:smoke-reasoning")
    run_cliff(settings, work / "cliff.json", source={"paper": "policy_cliff", "tier": "smoke-reasoning"})
    v = build_verdict("policy_cliff", "smoke-reasoning", [], tmp_path / "v", tmp_path / "results",
                      analyses=[str(work / "cliff.json"), str(work / "cliff_sweep.json")])
    claims = {c["id"]: c for c in v["claims"]}
    c2 = claims["lm_sweep_step_without_bonus_smooth_with_it"]
    assert c2["verdict"] == "reproduced", c2["numbers"]
    assert c2["numbers"]["analysis_hash"] == sweep["content_hash"]
    assert claims["bandit_cliff_without_bonus_continuity_with_it"]["verdict"] == "reproduced"
    # an edited per-checkpoint record is refused by the collector
    bad = json.loads(paths[0].read_text())
    bad["result"]["check_rate"] = 0.99
    paths[0].write_text(json.dumps(bad))
    assert CS.main(["collect", *map(str, paths), "--settings", "policy_cliff:smoke-reasoning",
                    "--out", str(tmp_path / "x.json")]) == 2
    assert not (tmp_path / "x.json").exists()


# ------------------------------------------------------------------------------------------ measurement ------
TINY_REASONING = {"tier": "smoke-reasoning", "method": "cliff_bonus_m05", "seed": 1,
                  "model": {"kind": "smoke", "hidden_size": 32, "num_layers": 1, "num_heads": 2,
                            "intermediate_size": 64},
                  "pretrain": {"seed": 0, "steps": 60, "batch_size": 32, "lr": 3e-3, "noise": 0.3, "check_rate": 0.3},
                  "data": {"task": "reasoning", "n_val": 64, "split_seed": 1234, "n_train": 256},
                  "eval": {"n_val": 16, "temperature": 1.0, "max_new_tokens": 40},
                  "hparams": {"eps": -0.05, "entropy_coef": 0.01}, "trl": {"entropy_coef": 0.01, "max_steps": 100},
                  "config_hash": "c" * 64, "job_key": "k" * 12}


@pytest.fixture(scope="module")
def reasoning_base(tmp_path_factory):
    """A tiny reasoning model (seconds): its pre-training traces check a step with probability 0.3."""
    from harness.train.pretrain import pretrain

    out = tmp_path_factory.mktemp("cliff") / "base"
    pretrain(out, TINY_REASONING["model"], TINY_REASONING["pretrain"], TINY_REASONING["data"], log=lambda *a: None)
    return out


def test_measure_is_the_held_out_samplers_check_rate_and_reproducible(reasoning_base, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.config.tiers import DataSpec, parse as parse_setting
    from harness.data.smoke_tasks import smoke_task
    from harness.evaluate.heldout import heldout_samples

    s1, r1 = CS.measure(TINY_REASONING, reasoning_base, prompts=24, seed=3)
    s2, r2 = CS.measure(TINY_REASONING, reasoning_base, prompts=24, seed=3)
    assert r1 == r2 and s1 == s2
    assert 0.0 <= r1["check_rate"] <= 1.0 and r1["n_prompts"] == 24
    assert r1["check_rate"] == sum(r1["per_prompt"]["check"]) / 24
    assert r1["sweep_point"] == {"eps": -0.05, "entropy_coef": 0.01} and r1["train_steps"] == 100
    assert s1["temperature"] == 1.0 and s1["max_new_tokens"] == 40 and s1["samples_per_prompt"] == 1
    # the same samples as the held-out evaluation's sampler (k = 1, same seed), the task's definition on them
    task = smoke_task("reasoning")
    rows = task.splits(parse_setting(DataSpec, TINY_REASONING["data"], "job data"))[1]
    tok, model = AutoTokenizer.from_pretrained(reasoning_base), AutoModelForCausalLM.from_pretrained(reasoning_base)
    _, sampled, texts = heldout_samples(model, tok, [r["prompt"] for r in rows[:24]], [r["answer"] for r in rows[:24]],
                                        score=task.score, k=1, temperature=1.0, max_new_tokens=40, seed=3)
    assert r1["per_prompt"]["check"] == [int(R.has_check(t[0])) for t in texts]
    assert r1["per_prompt"]["correct"] == [int(x[0]) for x in sampled]
    assert 0 < r1["check_rate"] < 1  # the tiny base model checks sometimes: the rate is not degenerate here
    # the command line writes the record the collector reads; another seed is another protocol
    (tmp_path / "job.json").write_text(json.dumps(TINY_REASONING))
    args = ["--job", str(tmp_path / "job.json"), "--model-dir", str(reasoning_base), "--prompts", "24",
            "--source", "tier=smoke-reasoning,method=cliff_bonus_m05,seed=1,job_key=" + "k" * 12]
    assert CS.main([*args, "--seed", "3", "--out", str(tmp_path / "a.json")]) == 0
    assert CS.main([*args, "--seed", "4", "--out", str(tmp_path / "b.json")]) == 0
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("a.json", "b.json"))
    assert a["result"] == r1 and a["analysis"] == "cliff_sweep" and a["source"]["seed"] == 1
    assert a["protocol_hash"] != b["protocol_hash"]


def test_measure_refuses_a_task_without_check_steps(reasoning_base, tmp_path):
    job = {**TINY_REASONING, "data": {"task": "addition", "n_val": 64, "split_seed": 1234}}
    with pytest.raises(ValueError, match="has no check step; supported: the reasoning smoke tasks"):
        CS.measure(job, reasoning_base, prompts=8, seed=0)
    (tmp_path / "job.json").write_text(json.dumps(TINY_REASONING))
    assert CS.main(["--job", str(tmp_path / "job.json"), "--model-dir", str(reasoning_base), "--prompts", "65",
                    "--out", str(tmp_path / "x.json")]) == 2
    assert not (tmp_path / "x.json").exists()


def test_the_reward_hook_trains_and_logs_the_check_rate(reasoning_base, tmp_path):
    """Two GRPO steps of a sweep point on the tiny reasoning model: the hook's reward replaces the task's and its
    check rate is logged."""
    rows = R.rows(R.split(64, 64, 1234)[0])
    trainer, _, logs = tiny_grpo_trainer(reasoning_base, tmp_path, "cliff_bonus_p20", reward_funcs=[R.boxed_reward],
                                         rows=rows, per_device_train_batch_size=8, num_generations=4,
                                         max_completion_length=40, max_steps=2, learning_rate=1e-4,
                                         entropy_coef=0.01)
    trainer.train()
    keys = set().union(*logs)
    assert {"policy_cliff/check_frac", "policy_cliff/correct_check_frac", "policy_cliff/correct_plain_frac"} <= keys
    first = next(x for x in logs if "policy_cliff/check_frac" in x)
    assert 0.0 <= first["policy_cliff/check_frac"] <= 1.0
    reward_keys = [k for k in keys if k.startswith("rewards/") and k.endswith("/mean")]
    assert any("cliff_bonus_p20" in k for k in reward_keys), reward_keys
