"""The pass@k boundary papers (invisible_leash, arXiv 2507.14843; rlvr_boundary, arXiv 2510.04028): the pass@k
evaluation's answer statistics (answer-level and token-level entropy, on a tiny reasoning model), the support
analysis (harness/analyze/support.py) on synthetic pass@k files with hand-computed classes and the leaderboard's
bootstrap, its bad inputs and command line, the claim checks of both cards, and the report's plots."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from harness.analyze import support as S
from harness.claims import stats
from harness.claims.registry import all_checks
from harness.config import ConfigError
from harness.evaluate import passk as PK
from harness.results import content_hash
from harness.results.estimators import pass_at_k
from harness.results.protocol import protocol_hash

BENCH = "reasoning_passk"


# ------------------------------------------------------------------------------------------ small pieces ------
def test_answer_entropy_and_file_names():
    # counts 2, 1, 1 of 4: -(1/2 ln 1/2 + 2 * 1/4 ln 1/4) = 1.5 ln 2
    assert PK.answer_entropy([2, 1, 1]) == pytest.approx(1.5 * math.log(2))
    assert PK.answer_entropy([5]) == 0.0 and PK.answer_entropy([3, 3]) == pytest.approx(math.log(2))
    with pytest.raises(ValueError, match="no samples"):
        PK.answer_entropy([])
    assert PK.passk_file(PK.DEFAULT_N) == "passk.json" and PK.passk_file(64) == "passk-n64.json"


def test_bootstrap_means_are_the_leaderboard_cells():
    v = np.random.default_rng(0).random((3, 40, 2))
    mean, lo, hi = S.bootstrap_means(v, iters=400)
    for j in range(2):
        ref = stats.cell(v[:, :, j], iters=400)
        assert mean[j] == pytest.approx(ref["mean"]) and [lo[j], hi[j]] == pytest.approx(ref["ci"], abs=1e-9)


def test_pass_matrix_and_support_classes_by_hand():
    counts = np.array([[0, 1, 3, 4]])
    np.testing.assert_allclose(S.pass_matrix(counts, 4, [1, 2])[0],
                               [[pass_at_k(4, c, 1), pass_at_k(4, c, 2)] for c in (0, 1, 3, 4)])
    # n = 4, k = 2: pass@2 of one correct sample is 1 - C(3,2)/C(4,2) = 1/2, so threshold 0.5 = "some sample correct"
    assert pass_at_k(4, 1, 2) == 0.5
    cls = S.support_classes([0, 1, 2, 0], np.array([[0, 0, 4, 3]]), 4, 2, 0.5)
    assert {c: cls[c][0].tolist() for c in S.CLASSES} == {
        "both": [False, False, True, False], "base_only": [False, True, False, False],
        "rl_only": [False, False, False, True], "neither": [True, False, False, False]}
    strict = S.support_classes([0, 1, 2, 0], np.array([[0, 0, 4, 3]]), 4, 2, 0.9)  # 2 of 4 correct: 5/6 < 0.9
    assert strict["base_only"][0].tolist() == [False, False, False, False] and strict["rl_only"][0].tolist()[2]


# ----------------------------------------------------------------------------------------- synthetic files ------
def _eval(method, seed, counts, *, n=8, steps=100, ans=None, tok=None, sha="abc", ks=(1, 2, 4, 8)):
    proto = {"benchmark": BENCH, "data_sha256": sha, "k": n, "extra": {"ks": list(ks)}}
    ans = ans if ans is not None else [1.0] * len(counts)
    tok = tok if tok is not None else [0.5] * len(counts)
    per = [{"id": i, "n_correct": int(c), "answer_entropy": float(a), "token_entropy": float(t), "n_tokens": 40,
            "answer_counts": [["<correct>", int(c)]] if c else [[None, n]]}
           for i, (c, a, t) in enumerate(zip(counts, ans, tok))]
    src = {"method": method, "tier": "smoke-reasoning", **({"seed": seed} if method != "base" else {})}
    rec = {"kind": "eval_result", "source": src, "train_steps": 0 if method == "base" else steps,
           "protocol": {"benchmarks": {BENCH: proto}}, "protocol_hash": protocol_hash({"benchmarks": {BENCH: proto}}),
           "benchmarks": {BENCH: {"task": BENCH, "k": n, "ks": list(ks), "n_problems": len(counts),
                                  "per_problem": per, "protocol_hash": protocol_hash(proto)}}}
    return {**rec, "content_hash": content_hash(rec)}


def _write(tmp_path, recs):
    paths = []
    for i, r in enumerate(recs):
        p = tmp_path / f"e{i}.json"
        p.write_text(json.dumps(r))
        paths.append(p)
    return paths


def _analysis(tmp_path, recs, **settings):
    return S.analyze(_write(tmp_path, recs), settings=settings, source={"paper": "invisible_leash"})


BASE = [2, 0, 1, 4, 0, 3]                               # 8 samples each; solved at k = 4: c >= 1 (pass@4(1) = 1/2)
RL = {42: [8, 0, 0, 8, 1, 0], 7: [7, 1, 0, 8, 0, 0], 1: [8, 0, 0, 6, 0, 2]}


def test_support_analysis_of_synthetic_files(tmp_path):
    recs = [_eval("base", None, BASE)] + [_eval("grpo", s, c) for s, c in RL.items()]
    recs += [_eval("grpo", s, BASE, steps=50) for s in (1, 7)]
    a = _analysis(tmp_path, recs, k=4)
    res = a["result"]
    assert a["kind"] == "analysis_result" and a["analysis"] == "support" and len(a["inputs"]) == 6
    assert a["settings"]["ks"] == [1, 2, 4, 8] and a["settings"]["k"] == 4 and a["settings"]["threshold"] == 0.5
    assert [(g["method"], g["train_steps"], g["seeds"]) for g in res["checkpoints"]] == [
        ("grpo", 50, [1, 7]), ("grpo", 100, [1, 7, 42])]                 # by length, seeds sorted
    g = res["checkpoints"][1]
    counts = np.array([RL[1], RL[7], RL[42]])
    assert g["per_seed"]["n_correct"] == counts.tolist()
    assert g["curve"][0]["mean"] == pytest.approx(counts.mean() / 8)          # pass@1 = avg@n
    assert g["curve"][-1]["mean"] == pytest.approx((counts > 0).mean())       # pass@n = any correct
    assert res["base"]["curve"][0]["mean"] == pytest.approx(np.mean(BASE) / 8) and res["base"]["solved"] == 4
    # classes by hand (base solves problems 0, 2, 3, 5): seed 1 solves 0, 3, 5 -> base-only {2}, RL-only {}
    # seed 7 solves 0, 1, 3 -> base-only {2, 5}, RL-only {1}; seed 42 solves 0, 3, 4 -> base-only {2, 5}, RL-only {4}
    assert g["support"]["counts"] == {"both": [3, 2, 2], "base_only": [1, 2, 2], "rl_only": [0, 1, 1],
                                      "neither": [2, 1, 1]}
    names = res["classes"]
    assert [names[i] for i in g["per_seed"]["support"][1]] == ["both", "rl_only", "base_only", "both", "neither",
                                                               "base_only"]
    sh = g["support"]["shares"]
    assert sh["base_only"]["mean"] == pytest.approx(5 / 18) and sum(sh[c]["mean"] for c in names) == pytest.approx(1)
    assert sh["base_only"]["ci"][0] <= 5 / 18 <= sh["base_only"]["ci"][1]
    same = res["checkpoints"][0]["support"]["counts"]                          # the base model's own counts
    assert same["base_only"] == [0, 0] and same["rl_only"] == [0, 0]
    assert S.analyze(_write(tmp_path, recs), settings={"k": 4})["result"] == res  # deterministic


def test_support_analysis_command_line(tmp_path):
    recs = [_eval("base", None, BASE)] + [_eval("grpo", s, c) for s, c in RL.items()]
    paths = [str(p) for p in _write(tmp_path, recs)]
    out = tmp_path / "out" / "support.json"
    assert S.main([*paths, "--settings", '{"ks": [1, 8]}', "--source", "paper=p,tier=smoke-reasoning",
                   "--out", str(out)]) == 0
    a = json.loads(out.read_text())
    assert a["content_hash"] == content_hash(a) and a["result"]["ks"] == [1, 8] and a["result"]["support_k"] == 8
    assert a["source"] == {"paper": "p", "tier": "smoke-reasoning"}
    assert S.main([*paths, "--settings", '{"kk": 1}', "--out", str(tmp_path / "bad.json")]) == 2
    assert not (tmp_path / "bad.json").exists()


def test_bad_inputs_are_named(tmp_path):
    base, rl = _eval("base", None, BASE), [_eval("grpo", s, c) for s, c in RL.items()]
    no_answers = json.loads(json.dumps(rl[0]))
    for p in no_answers["benchmarks"][BENCH]["per_problem"]:
        del p["answer_entropy"]
    no_answers["content_hash"] = content_hash({k: v for k, v in no_answers.items() if k != "content_hash"})
    cases = [([base, no_answers], {}, "without --answers"),
             ([base, base, *rl], {}, "exactly one base-model evaluation, got 2"),
             ([*rl], {}, "exactly one base-model evaluation, got 0"),
             ([base, rl[0], _eval("grpo", 42, BASE)], {}, "two evaluations of grpo"),
             ([base, _eval("grpo", 1, BASE, sha="zzz")], {}, "differ in protocol"),
             ([base, *rl], {"k": 16}, "every k must be in 1..n"),
             ([base, *rl], {"threshold": 0}, "threshold must be a number in (0, 1]"),
             ([base, *rl], {"treshold": 0.5}, "unknown setting 'treshold'; valid: ks, k, threshold")]
    for recs, settings, msg in cases:
        with pytest.raises(ConfigError, match=msg.replace("(", r"\(").replace(")", r"\)")):
            _analysis(tmp_path, recs, **settings)
    edited = {**base, "train_steps": 5}
    with pytest.raises(ConfigError, match="not an intact eval_result"):
        _analysis(tmp_path, [edited, *rl])
    with pytest.raises(ConfigError, match="no pass@k evaluations"):
        S.analyze([])


# -------------------------------------------------------------------------------------------------- checks ------
def _checks_on(tmp_path, recs, check, **params):
    a = _analysis(tmp_path, recs)
    return all_checks()[check]([], **params, analyses=[a])


def _rng_counts(lo, hi, P=60, seed=0):
    return list(np.random.default_rng(seed).integers(lo, hi + 1, P))


def test_crossover_check(tmp_path):
    base = _eval("base", None, _rng_counts(1, 3))                              # pass@8 = 1 on every problem
    sharp = [_eval("grpo", s, _rng_counts(5, 8, seed=s)) for s in (1, 2, 3)]
    v, nums = _checks_on(tmp_path, [base, *sharp], "passk_crossover", method="grpo", k_large=8, margin=0.005)
    assert v == "reproduced" and nums["pass@1"]["diff"] > 0 and nums["pass@8"]["diff"] == 0
    wider = [_eval("base", None, [0] * 30 + _rng_counts(1, 3, P=30))]           # half the problems unsolved by base
    assert _checks_on(tmp_path, [*wider, *sharp], "passk_crossover", method="grpo")[0] == "not_reproduced"
    one = _checks_on(tmp_path, [base, sharp[0]], "passk_crossover", method="grpo")
    assert one[0] == "inconclusive" and "1 seed(s)" in one[1]["reason"]
    v, nums = all_checks()["passk_crossover"]([], method="grpo", analyses=[])
    assert v == "not_run" and "support_of" in nums["reason"]
    assert _checks_on(tmp_path, [base, *sharp], "passk_crossover", method="cure")[0] == "inconclusive"


def test_support_shrinks_check(tmp_path):
    base = _eval("base", None, [2] * 60)
    lossy = [_eval("grpo", s, [0] * 20 + [8] * 40) for s in (1, 2, 3)]        # loses a third of the problems
    v, nums = _checks_on(tmp_path, [base, *lossy], "support_shrinks", method="grpo")
    assert v == "reproduced" and nums["diff"] == pytest.approx(1 / 3) and nums["counts"]["base_only"] == [20] * 3
    gaining = [_eval("base", None, [0] * 20 + [2] * 40)] + [_eval("grpo", s, [8] * 60) for s in (1, 2, 3)]
    assert _checks_on(tmp_path, gaining, "support_shrinks", method="grpo")[0] == "not_reproduced"
    same = [base] + [_eval("grpo", s, [5] * 60) for s in (1, 2, 3)]
    assert _checks_on(tmp_path, same, "support_shrinks", method="grpo")[0] == "inconclusive"


def test_answer_entropy_check(tmp_path):
    rng = np.random.default_rng(4)
    base = _eval("base", None, [2] * 50, ans=rng.uniform(1.0, 1.5, 50), tok=rng.uniform(0.4, 0.6, 50))
    fewer = [_eval("grpo", s, [6] * 50, ans=rng.uniform(0.1, 0.4, 50), tok=rng.uniform(0.45, 0.65, 50))
             for s in (1, 2, 3)]
    v, nums = _checks_on(tmp_path, [base, *fewer], "answer_entropy_falls", method="grpo")
    assert v == "reproduced" and nums["answer_entropy"]["diff"] < 0 and nums["token_entropy"]["diff"] > 0
    collapsed = [_eval("grpo", s, [6] * 50, ans=rng.uniform(0.1, 0.4, 50), tok=rng.uniform(0.1, 0.2, 50))
                 for s in (1, 2, 3)]                                            # token entropy falls by ~70 %
    assert _checks_on(tmp_path, [base, *collapsed], "answer_entropy_falls", method="grpo")[0] == "not_reproduced"


def _length_evals(method, gaps: dict[int, str], P=60):
    """3 seeds of ``method`` per training length: 'below' loses 20 base-solved problems, 'above' solves 20 the base
    model does not, 'zero' matches the base model (which solves problems 20..59)."""
    counts = {"below": [0] * 20 + [0] * 20 + [4] * 20, "above": [4] * 20 + [4] * 40, "zero": [0] * 20 + [4] * 40}
    return [_eval(method, s, counts[side], steps=steps) for steps, side in gaps.items() for s in (1, 2, 3)]


BASE_60 = _eval("base", None, [0] * 20 + [3] * 40)


def test_gap_sign_change_check(tmp_path):
    check = "passk_gap_sign_change"
    v, nums = _checks_on(tmp_path, [BASE_60, *_length_evals("grpo", {25: "zero", 100: "below", 300: "above"})],
                         check, method="grpo", k_large=8)
    assert v == "reproduced" and (nums["negative_at"], nums["positive_at"]) == (100, 300)
    assert nums["gaps"]["100"]["side"] == "below" and nums["gaps"]["100"]["diff"] == pytest.approx(-1 / 3)
    for sides, want in (({25: "above", 100: "above"}, "not_reproduced"), ({25: "above", 100: "below"}, "not_reproduced"),
                        ({25: "below", 100: "zero"}, "inconclusive"), ({100: "below"}, "inconclusive")):
        assert _checks_on(tmp_path, [BASE_60, *_length_evals("grpo", sides)], check, method="grpo")[0] == want, sides
    only = [BASE_60, *_length_evals("grpo", {25: "zero", 100: "below", 300: "above"})]
    assert _checks_on(tmp_path, only, check, method="grpo", steps=[25, 100])[0] == "not_reproduced"


def test_gap_holds_longer_check(tmp_path):
    check = "passk_gap_holds_longer"
    grpo = _length_evals("grpo", {25: "zero", 100: "below", 300: "below"})
    for neg, want in (({25: "zero", 100: "zero", 300: "below"}, "reproduced"),
                      ({25: "zero", 100: "above", 300: "zero"}, "reproduced"),
                      ({25: "below", 100: "zero", 300: "zero"}, "not_reproduced"),
                      ({25: "zero", 100: "below", 300: "zero"}, "not_reproduced")):
        v, nums = _checks_on(tmp_path, [BASE_60, *grpo, *_length_evals("negative_only", neg)], check,
                             method="negative_only", baseline="grpo")
        assert v == want, neg
        assert nums["first_drop"]["grpo"] == 100
    never = _length_evals("grpo", {25: "zero", 100: "zero"}) + _length_evals("negative_only", {25: "zero", 100: "zero"})
    assert _checks_on(tmp_path, [BASE_60, *never], check, method="negative_only", baseline="grpo")[0] == "inconclusive"
    uneven = _length_evals("grpo", {25: "zero", 100: "below"}) + _length_evals("negative_only", {25: "zero"})
    v, nums = _checks_on(tmp_path, [BASE_60, *uneven], check, method="negative_only", baseline="grpo")
    assert v == "inconclusive" and "training lengths differ" in nums["reason"]


def test_cards_state_their_claims_with_registered_checks():
    from harness.config import load_card

    for paper in ("invisible_leash", "rlvr_boundary"):
        card = load_card(paper)
        for c in card["claims"]:
            assert c["check"] in all_checks(), c["id"]
        support = [c for c in card["claims"] if c["tier"] == "smoke-reasoning" and c["check"] != "train_metric_window"]
        assert support and all(c["params"]["n"] == 64 and c["params"]["ks"][-1] == 32 for c in support)


# ----------------------------------------------------------------------------------- answer statistics ------
def _tiny_reasoning_job():
    return {"tier": "smoke-reasoning",
            "model": {"kind": "smoke", "hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64},
            "pretrain": {"seed": 0, "steps": 60, "batch_size": 32, "lr": 3e-3, "noise": 0.3, "check_rate": 0.3},
            "data": {"task": "reasoning", "n_val": 64, "split_seed": 1234, "n_train": 256},
            "eval": {"n_val": 5, "temperature": 1.0, "max_new_tokens": 30}}


@pytest.fixture(scope="module")
def reasoning_base(tmp_path_factory):
    from harness.train.pretrain import pretrain

    job = _tiny_reasoning_job()
    out = tmp_path_factory.mktemp("support") / "base"
    pretrain(out, job["model"], job["pretrain"], job["data"], log=lambda *a: None)
    return out


def test_answer_statistics_are_the_held_out_entropy_of_the_same_samples(reasoning_base):
    import torch

    from harness.data.load import load_model_and_data
    from harness.data.smoke_tasks import smoke_task

    job = _tiny_reasoning_job()
    model, tok, _t, val, _r, score = load_model_and_data(job, reasoning_base, reasoning_base)
    rows = val[:5]
    prompts, answers = [r["prompt"] for r in rows], [r["answer"] for r in rows]
    kw = dict(score=score, n=6, temperature=0.7, max_new_tokens=30, seed=5, batch_size=8, chunk=6)
    task = smoke_task("reasoning")
    with_stats = PK.sample_problems(model, tok, prompts, answers, **kw, extract=task.vote_key)
    plain = PK.sample_problems(model, tok, prompts, answers, **kw)
    assert [r["n_correct"] for r in with_stats] == [r["n_correct"] for r in plain]   # the meter draws nothing
    # the same samples by hand: one generate call (chunk = n, batch >= problems), logits kept
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        enc = tok(prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
        g = model.generate(**enc, do_sample=True, temperature=0.7, top_k=0, top_p=1.0, num_return_sequences=6,
                           max_new_tokens=30, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                           output_logits=True, return_dict_in_generate=True)
    comp = g.sequences[:, enc["input_ids"].shape[1]:]
    logp = torch.log_softmax(torch.stack(g.logits, 1).float() / 0.7, -1)
    ent = -(logp.exp() * logp).sum(-1)
    valid = PK.own_tokens(comp, tok.eos_token_id, tok.pad_token_id)
    texts = tok.batch_decode(comp, skip_special_tokens=True)
    for j, rec in enumerate(with_stats):
        rows_j = slice(6 * j, 6 * j + 6)
        assert rec["n_tokens"] == int(valid[rows_j].sum())
        assert rec["token_entropy"] == pytest.approx(float(ent[rows_j][valid[rows_j]].sum()) / rec["n_tokens"],
                                                     rel=1e-5)
        keys = [("<correct>" if score(t.strip(), answers[j]) else
                 (None if task.vote_key(t.strip()) is None else "=" + task.vote_key(t.strip())))
                for t in texts[rows_j]]
        assert sorted(rec["answer_counts"], key=str) == sorted([[k, keys.count(k)] for k in set(keys)], key=str)
        assert sum(c for _, c in rec["answer_counts"]) == 6 and rec["n_correct"] == keys.count("<correct>")
        assert rec["answer_entropy"] == pytest.approx(PK.answer_entropy([keys.count(k) for k in set(keys)]))


def test_passk_record_with_and_without_answers(reasoning_base, tmp_path):
    job = _tiny_reasoning_job()
    kw = dict(data_dir=tmp_path, n=4, ks=[1, 2, 4], seed=1, batch_size=8, chunk=4, bootstrap_iters=100)
    r = PK.evaluate_passk_job(job, reasoning_base, out=tmp_path / "a.json", answers=True, **kw)
    e = r["benchmarks"][BENCH]
    assert r["train_steps"] == 0 and r["protocol"]["benchmarks"][BENCH]["extra"]["answer_stats"] == PK.ANSWER_STATS
    assert all({"answer_counts", "answer_entropy", "token_entropy", "n_tokens"} <= set(p) for p in e["per_problem"])
    assert e["answer_entropy"] == pytest.approx(np.mean([p["answer_entropy"] for p in e["per_problem"]]))
    plain = PK.evaluate_passk_job({**job, "trl": {"max_steps": 7}}, reasoning_base, out=None,
                                  source={"method": "grpo", "seed": 1}, **kw)
    p = plain["benchmarks"][BENCH]
    assert plain["train_steps"] == 7 and "answer_stats" not in plain["protocol"]["benchmarks"][BENCH]["extra"]
    assert all(set(x) == {"id", "n_correct", "pass"} for x in p["per_problem"]) and "answer_entropy" not in p
    assert [x["n_correct"] for x in p["per_problem"]] == [x["n_correct"] for x in e["per_problem"]]
    # a support analysis of the recorded file and itself as a checkpoint
    rec = {**r, "source": {"method": "grpo", "seed": 1}, "train_steps": 7}
    rec["content_hash"] = content_hash({k: v for k, v in rec.items() if k != "content_hash"})
    (tmp_path / "b.json").write_text(json.dumps(rec))
    a = S.analyze([tmp_path / "a.json", tmp_path / "b.json"])
    g = a["result"]["checkpoints"][0]
    assert g["support"]["counts"]["base_only"] == [0] and g["support"]["counts"]["rl_only"] == [0]
    assert g["answer_entropy"]["mean"] == pytest.approx(e["answer_entropy"])


# -------------------------------------------------------------------------------------------------- report ------
def test_report_plots_of_a_support_analysis(tmp_path):
    from harness.analyze.record import write_analysis
    from harness.report import passk

    recs = [_eval("base", None, BASE)] + [_eval("grpo", s, c) for s, c in RL.items()]
    a = _analysis(tmp_path, recs)
    rows = passk.support_rows(a["result"])
    assert [r["method"] for r in rows] == ["base", "grpo @ 100 steps"] and rows[0]["role"] == "base model"
    for root, rel in ((tmp_path / "work", "analysis/p/smoke-reasoning/support.json"),
                      (tmp_path / "results", "p/smoke-reasoning/analysis/support.json")):
        write_analysis(a, root / rel)
        plots = passk.support_plots(root, "p", "smoke-reasoning")
        assert [x["name"] for x in plots] == ["passk_support", "support"]
        assert all(x["src"].startswith("data:image/png;base64,") and x["tier"] == "smoke-reasoning" for x in plots)
    assert passk.support_plots(tmp_path / "work", "p", "smoke") == []
    assert passk.support_plot_uri({**a["result"], "checkpoints": []}, "t") is None


def test_the_verdict_judges_the_cards_claims_from_the_support_analysis(tmp_path):
    from harness.analyze.record import write_analysis
    from harness.claims.verdict import build_verdict

    kw = dict(n=64, ks=(1, 2, 4, 8, 16, 32))  # the card's protocol: n = 64, k up to 32
    base = _eval("base", None, _rng_counts(8, 24), ans=[1.2] * 60, tok=[0.5] * 60, **kw)
    sharp = [_eval("grpo", s, _rng_counts(40, 64, seed=s), ans=[0.3] * 60, tok=[0.55] * 60, **kw) for s in (1, 2, 3)]
    a = S.analyze(_write(tmp_path, [base, *sharp]), settings={"k": 32},
                  source={"paper": "invisible_leash", "tier": "smoke-reasoning"})
    path = tmp_path / "analysis" / "support.json"
    write_analysis(a, path)
    v = build_verdict("invisible_leash", "smoke-reasoning", [], tmp_path / "verdict", tmp_path / "pinned",
                      evals=[], analyses=[str(path)])
    got = {c["id"]: c["verdict"] for c in v["claims"]}
    assert got == {"leash_passk_crossover": "reproduced", "leash_support_shrinks": "inconclusive",  # nothing lost
                   "leash_answer_entropy_falls": "reproduced", "leash_large_k_at_or_below_base": "not_run",
                   "leash_shrinkage_exceeds_expansion": "not_run", "leash_answer_entropy_declines": "not_run"}
    assert v["analysis_inputs"] == [json.loads(path.read_text())["content_hash"]]
