"""ASPO (arXiv 2508.19201): hand-derived golden examples (no authors' code released; the card says so), the
clip invariants (|A' - A| <= k|A|, sign of A kept, non-eligible responses untouched), the pass@k evaluation
(unbiased estimator against exact enumeration, sampling on a tiny calculator model, the record the claims read),
the claim checks, one real training step on the calculator task, and bad settings."""
from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.evaluate import passk as PK
from harness.methods.context import AdvantageContext
from harness.methods.registry import RegistryError, get_method

FIX = json.loads((Path(__file__).parent / "fixtures" / "aspo_golden.json").read_text())
ASPO = get_method("aspo")
CALC = 22


def _actx(rewards, ids, mask, G=4):
    return AdvantageContext(rewards=torch.as_tensor(rewards, dtype=torch.float64), group_size=G,
                            mask=torch.as_tensor(mask, dtype=torch.float64), completion_ids=torch.as_tensor(ids))


def _run(actx, **over):
    return ASPO.hook("advantage")(actx, **ASPO.resolve({"call_grams": [[CALC]], **over}))


# ---------------------------------------------------------------------------------------------- golden ------
@pytest.mark.parametrize("case", FIX["cases"], ids=[c["name"] for c in FIX["cases"]])
def test_hand_derived_examples(case):
    i = FIX["inputs"]
    adv, m = _run(_actx(i["rewards"], i["completion_ids"], i["mask"], i["group_size"]),
                  **{**FIX["defaults"], **case["hparams"]})
    torch.testing.assert_close(adv, torch.tensor(case["expected"], dtype=torch.float64), atol=1e-9, rtol=0)
    assert m["aspo/sign_flips"] == 0


def test_fixture_is_what_the_plain_python_generator_computes():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen_aspo", Path(__file__).parent / "fixtures" / "generators" / "aspo.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert gen.main([]) == 0
    assert "hand-derived" in FIX["source"]


def test_golden_covers_clipped_unclipped_and_uneligible_rows():
    i = FIX["inputs"]
    base = next(c for c in FIX["cases"] if c["name"] == "k_zero_is_grpo")["expected"]
    clipped = next(c for c in FIX["cases"] if c["name"] == "conservative_clipped")["expected"]
    small = next(c for c in FIX["cases"] if c["name"] == "small_delta_unclipped")["expected"]
    d = [abs(a - b) for a, b in zip(clipped, base)]
    assert max(d) == pytest.approx(0.7 * abs(base[0]))                 # the clip binds
    assert 0 < abs(small[4] - base[4]) < 0.7 * abs(base[4])             # an unclipped shaping
    assert clipped[2] == base[2] and clipped[3] == base[3]              # no call (its <calc> is padding) / wrong
    assert i["mask"][2][-1] == 0 and i["completion_ids"][2][-1] == CALC


# ------------------------------------------------------------------------------------------ invariants ------
def _random_batch(seed, N=64, T=12, G=8):
    g = torch.Generator().manual_seed(seed)
    r = (torch.rand(N, generator=g) < 0.6).double()
    ids = torch.randint(4, 21, (N, T), generator=g)
    calls = torch.rand(N, T, generator=g) < 0.15
    ids[calls] = CALC
    lens = torch.randint(3, T + 1, (N,), generator=g)
    mask = (torch.arange(T)[None] < lens[:, None]).double()
    return r, ids, mask, G


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("hp", [{}, {"delta": -2.5, "k": 0.9}, {"delta": 7.0, "normaliser": "none"},
                                {"normaliser": "mean", "delta": -40.0, "k": 0.3}])
def test_shaping_stays_inside_k_abs_a_and_never_flips_the_sign(seed, hp):
    r, ids, mask, G = _random_batch(seed)
    actx = _actx(r, ids, mask, G)
    a = actx.grpo_advantages()
    adv, m = _run(actx, **hp)
    k = ASPO.resolve(hp)["k"]
    assert torch.all((adv - a).abs() <= k * a.abs() + 1e-12)
    assert torch.all(torch.sign(adv) == torch.sign(a))
    assert m["aspo/sign_flips"] == 0
    pos = torch.tensor([next((t for t in range(ids.size(1)) if ids[n, t] == CALC and mask[n, t] > 0), -1)
                        for n in range(ids.size(0))])
    untouched = (r < 1) | (pos < 0)                                      # wrong, or no (valid) call
    assert torch.equal(adv[untouched], a[untouched])


def test_earlier_call_gets_more_credit_among_correct_tool_users():
    T = 10
    ids = torch.full((4, T), 5)
    for n, p in enumerate([1, 3, 6, 8]):
        ids[n, p] = CALC
    adv, _ = _run(_actx([1.0, 1.0, 1.0, 0.0], ids, torch.ones(4, T)), delta=-0.2)
    assert adv[0] > adv[1] > adv[2] > 0 > adv[3]
    adv_pos, _ = _run(_actx([1.0, 1.0, 1.0, 0.0], ids, torch.ones(4, T)), delta=+0.2)  # delta > 0: later favoured
    assert adv_pos[0] < adv_pos[1] < adv_pos[2]


def test_no_call_grams_or_all_correct_group_is_grpo():
    r, ids, mask, G = _random_batch(0)
    actx = _actx(r, ids, mask, G)
    adv, m = ASPO.hook("advantage")(actx, **ASPO.resolve())             # default call_grams []: no tool
    assert torch.equal(adv, actx.grpo_advantages()) and m["aspo/tool_use_frac"] == 0.0
    ids = torch.full((4, 6), 5)
    ids[:, 1] = CALC
    ids[0, 1], ids[0, 4] = 5, CALC
    adv, m = _run(_actx([1.0] * 4, ids, torch.ones(4, 6)))               # A = 0 for everyone: nothing to shape
    assert torch.equal(adv, torch.zeros(4, dtype=adv.dtype)) and m["aspo/eligible_frac"] == 1.0


def test_bad_settings_name_the_valid_choices():
    r, ids, mask, G = _random_batch(1)
    with pytest.raises(ValueError, match="unknown normaliser 'iqr'; valid: std, mean, none"):
        _run(_actx(r, ids, mask, G), normaliser="iqr")
    with pytest.raises(ValueError, match="k must be >= 0"):
        _run(_actx(r, ids, mask, G), k=-0.1)
    with pytest.raises(RegistryError, match="no hyperparameter 'clip'; valid: call_grams, correct_reward, delta"):
        ASPO.resolve({"clip": 0.5})
    with pytest.raises(RegistryError, match="delta must be float"):
        ASPO.resolve({"delta": "early"})


def test_card_call_gram_is_the_calculator_token_and_the_tier_is_the_tool_task():
    from harness.data import reasoning as R
    from harness.plan import resolve_job

    job = resolve_job("aspo", "smoke-reasoning", "aspo", 42)
    tok = R.build_tokenizer()
    assert job["hparams"]["call_grams"] == [[tok.convert_tokens_to_ids(R.CALL_OPEN)]]
    assert job["data"]["task"] == "reasoning_calc" and job["pretrain"]["tool_rate"] > 0
    text = PK.apply_variant(job, {"data": {"task": "reasoning"}, "pretrain": {"tool_rate": None}})
    assert "tool_rate" not in text["pretrain"] and text["data"]["task"] == "reasoning" and "job_key" not in text
    with pytest.raises(ValueError, match="unknown block 'datta'; valid: method, data"):
        PK.apply_variant(job, {"datta": {}})


# --------------------------------------------------------------------------------------------- pass@k ------
def test_unbiased_estimator_equals_exact_enumeration():
    for n in range(1, 9):
        for outcomes in itertools.product([False, True], repeat=n):
            c = sum(outcomes)
            for k in range(1, n + 1):
                exact = PK.pass_at_k_enumerated(outcomes, k)
                assert PK.pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12)
                assert PK.pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k))
    assert PK.pass_at_k(64, 3, 32) == pytest.approx(1 - math.comb(61, 32) / math.comb(64, 32))


def test_curve_bootstraps_over_problems_and_checks_k():
    counts = [0, 1, 4, 8, 2, 0, 7, 3]
    per, metrics = PK.curve(counts, 8, [4, 1, 2], iters=500, seed=0)
    assert list(metrics) == ["pass@1", "pass@2", "pass@4"] and per.shape == (8, 3)
    assert metrics["pass@1"]["value"] == pytest.approx(sum(counts) / 64)
    values = [metrics[f"pass@{k}"]["value"] for k in (1, 2, 4)]
    assert values == sorted(values)                                      # pass@k grows with k
    for v in metrics.values():
        assert v["ci"][0] <= v["value"] <= v["ci"][1]
    assert PK.curve(counts, 8, [1, 2, 4], iters=500, seed=0)[1] == metrics  # seeded
    with pytest.raises(ValueError, match=r"every k must be in 1..n \(n = 8"):
        PK.curve(counts, 8, [16])


def _tiny_calc_job():
    """A tiny reasoning_calc base model's job (seconds to pre-train; every pre-training step is a calculator call)."""
    return {"tier": "smoke-reasoning",
            "model": {"kind": "smoke", "hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64},
            "pretrain": {"seed": 0, "steps": 60, "batch_size": 32, "lr": 3e-3, "noise": 0.3, "check_rate": 0.3,
                         "tool_rate": 1.0},
            "data": {"task": "reasoning_calc", "n_val": 64, "split_seed": 1234, "n_train": 256},
            "eval": {"n_val": 6, "temperature": 1.0, "max_new_tokens": 40}}


def test_passk_record_of_a_tiny_calculator_model(tmp_path):
    from harness.train.pretrain import pretrain

    job = _tiny_calc_job()
    base = tmp_path / "base"
    pretrain(base, job["model"], job["pretrain"], job["data"], log=lambda *a: None)
    kw = dict(data_dir=tmp_path, n=4, ks=[1, 2, 4], seed=3, batch_size=4, chunk=3, bootstrap_iters=200,
              source={"method": "grpo", "seed": 42, "tier": "smoke-reasoning"})
    r1 = PK.evaluate_passk_job(job, base, out=tmp_path / "passk.json", **kw)
    assert json.loads((tmp_path / "passk.json").read_text())["content_hash"] == r1["content_hash"]
    e = r1["benchmarks"]["reasoning_calc_passk"]
    assert e["k"] == 4 and e["ks"] == [1, 2, 4] and e["n_problems"] == 6
    assert r1["protocol"]["benchmarks"]["reasoning_calc_passk"]["extra"]["ks"] == [1, 2, 4]
    for p in e["per_problem"]:
        assert p["pass"] == [PK.pass_at_k(4, p["n_correct"], k) for k in (1, 2, 4)]
        assert 0.0 <= p["tool_use"] <= 1.0
    assert any(p["first_call_pos"] is not None for p in e["per_problem"])  # the base model calls the calculator
    r2 = PK.evaluate_passk_job(job, base, out=None, **kw)                  # seeded: the same samples again
    assert [p["n_correct"] for p in r2["benchmarks"]["reasoning_calc_passk"]["per_problem"]] == \
        [p["n_correct"] for p in e["per_problem"]]
    with pytest.raises(ValueError, match="every k must be in 1..n"):
        PK.evaluate_passk_job(job, base, out=None, **{**kw, "ks": [8]})


# ---------------------------------------------------------------------------------------------- claims ------
def _rec(method, seed, task, counts, n=8, ks=(1, 2, 4), pos=None, sha="abc"):
    per = [{"id": i, "n_correct": c, "pass": [PK.pass_at_k(n, c, k) for k in ks],
            **({"first_call_pos": pos[i], "tool_use": 1.0} if pos else {})} for i, c in enumerate(counts)]
    name = f"{task}_passk"
    return {"source": {"method": method, "seed": seed}, "protocol": {"benchmarks": {name: {"data_sha256": sha}}},
            "benchmarks": {name: {"k": n, "ks": list(ks), "n_problems": len(counts), "per_problem": per}}}


def test_passk_claim_check_compares_tool_and_text_variants_at_every_k():
    from harness.claims.registry import all_checks

    check = all_checks()["passk_above_baseline"]
    rng = np.random.default_rng(0)
    hi = [list(rng.integers(3, 9, 60)) for _ in range(3)]
    lo = [list(rng.integers(0, 3, 60)) for _ in range(3)]
    evals = [_rec("grpo", s, "reasoning_calc", hi[i]) for i, s in enumerate((42, 7, 1))]
    evals += [_rec("grpo", s, "reasoning", lo[i]) for i, s in enumerate((42, 7, 1))]
    p = dict(method="grpo", baseline="grpo", benchmark="reasoning_calc_passk", baseline_benchmark="reasoning_passk")
    v, nums = check([], **p, n=8, ks=[1, 2, 4], evals=evals)
    assert v == "reproduced" and set(nums["per_k"]) == {"pass@1", "pass@2", "pass@4"}
    v, _ = check([], **{**p, "benchmark": "reasoning_passk", "baseline_benchmark": "reasoning_calc_passk"},
                 evals=evals)
    assert v == "not_reproduced"
    ceiling = [_rec("grpo", s, t, [8] * 60) for s in (42, 7, 1) for t in ("reasoning_calc", "reasoning")]
    assert check([], **p, evals=ceiling)[0] == "inconclusive"             # both at pass@k = 1: no difference
    other = evals[:3] + [_rec("grpo", s, "reasoning", lo[0], sha="zzz") for s in (42, 7, 1)]
    assert "different held-out problems" in check([], **p, evals=other)[1]["reason"]
    assert check([], **p, evals=[])[0] == "inconclusive"


def test_first_call_claim_check_reads_tool_positions():
    from harness.claims.registry import all_checks

    check = all_checks()["aspo_first_call_earlier"]
    rng = np.random.default_rng(1)
    early = [_rec("aspo", s, "reasoning_calc", [4] * 40, pos=list(rng.uniform(1, 4, 40))) for s in (42, 7, 1)]
    late = [_rec("grpo", s, "reasoning_calc", [4] * 40, pos=list(rng.uniform(8, 12, 40))) for s in (42, 7, 1)]
    late[0]["benchmarks"]["reasoning_calc_passk"]["per_problem"][0]["first_call_pos"] = None  # dropped problem
    v, nums = check([], method="aspo", baseline="grpo", benchmark="reasoning_calc_passk", evals=early + late)
    assert v == "reproduced" and nums["problems_used"] == 39
    v, _ = check([], method="grpo", baseline="aspo", benchmark="reasoning_calc_passk", evals=early + late)
    assert v == "not_reproduced"


# ------------------------------------------------------------------------------------ one training step ------
def test_one_real_training_step_on_the_calculator_task(tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig

    from harness.config.tiers import DataSpec
    from harness.data.smoke_tasks import smoke_task
    from harness.train.job import task_hooks
    from harness.train.pretrain import pretrain
    from harness.train.trainer import HarnessGRPOTrainer

    job = _tiny_calc_job()
    base = tmp_path / "base"
    pretrain(base, job["model"], job["pretrain"], job["data"], log=lambda *a: None)
    model, tok = AutoModelForCausalLM.from_pretrained(base), AutoTokenizer.from_pretrained(base)
    task = smoke_task("reasoning_calc")
    train, _ = task.splits(DataSpec(**job["data"]))
    records = []

    class Keep(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            records.append(dict(logs or {}))

    args = GRPOConfig(output_dir=str(tmp_path / "out"), use_cpu=True, bf16=False, max_steps=1, logging_steps=1,
                      report_to="none", save_strategy="no", seed=0, disable_tqdm=True, per_device_train_batch_size=16,
                      num_generations=8, max_completion_length=40, learning_rate=1e-3, beta=0.0)
    hp = {"call_grams": [[tok.convert_tokens_to_ids("<calc>")]], "delta": -2.0, "k": 0.7}
    before = [p.detach().clone() for p in model.parameters()]
    def calls_tool(completions, **kw):  # the tiny model answers nothing right: reward tool use, so rows are eligible
        return [1.0 if "<calc>" in c else 0.0 for c in completions]

    trainer = HarnessGRPOTrainer(model=model, reward_funcs=[calls_tool], args=args,
                                 train_dataset=Dataset.from_list(train), processing_class=tok, method=ASPO,
                                 hparams=hp, method_seed=0, callbacks=[Keep()], **task_hooks(job, tok))
    trainer.train()
    logged = {k: v for d in records for k, v in d.items()}
    for key in ("aspo/tool_use_frac", "aspo/eligible_frac", "aspo/sign_flips", "method/frac_tokens_touched",
                "tool/calls_per_completion"):
        assert key in logged, key
    assert logged["aspo/sign_flips"] == 0 and logged["aspo/tool_use_frac"] > 0
    assert logged["aspo/shaped_frac"] > 0 and logged["method/frac_tokens_touched"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
