"""EMPO against numbers computed with the authors' code: tests/fixtures/empo_golden.json, from QingyangZhang/EMPO
@ c5eccd40: the TRL reward (``trl/src/open_r1/rewards.py`` ``get_empo_math_reward`` with ``semantic_uncertainty.py``
``get_semantic_ids_by_rule``, math_verify extraction) on the cases' completion texts, and the verl reward
(``verl-empo/verl/utils/reward_score/empo/compute_metrics.py`` ``empo_metrics``, ``reward_type="entropy"``).
Plus the invariants of issue 12 (all-distinct group -> 0, majority cluster -> its share), the entropy filter, bad
input, and training steps on the tiny smoke model that show the training signal never depends on the answer column.

Regenerate / re-check the fixture from the authors' code (their code is loaded at run time, none is committed):

    git clone https://github.com/QingyangZhang/EMPO /tmp/EMPO && git -C /tmp/EMPO checkout c5eccd40
    python tests/fixtures/generators/empo.py /tmp/EMPO             # check; --write rewrites `expected`
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from harness.methods import empo as E
from harness.methods.context import BatchContext, RewardContext
from harness.methods.registry import RegistryError, get_method
from conftest import tiny_grpo_trainer

FIX = json.loads((Path(__file__).parent / "fixtures" / "empo_golden.json").read_text())
CASES = FIX["cases"]
METHOD = get_method("empo")


def _reward(texts, G, answers=None, **over):
    """The registered reward hook on a RewardContext, as the trainer calls it; returns (rewards, logged metrics)."""
    logged: dict[str, float] = {}
    rctx = RewardContext(prompts=["p"] * len(texts), completions=list(texts), completion_ids=[[1]] * len(texts),
                         group_size=G, answers=answers, log_metric=lambda k, v: logged.__setitem__(k, v))
    return METHOD.hook("reward")(rctx, **METHOD.resolve({"verify_timeout": None, **over})), logged


def _filter(rewards, G, **over):
    r = torch.tensor(rewards, dtype=torch.float32)
    bctx = BatchContext(stage="scored", group_size=G, rewards=r, advantages=torch.zeros_like(r))
    return METHOD.hook("data")(bctx, **METHOD.resolve({"group_filter": "entropy", **over}))


def _groups(case):
    G = case["group_size"]
    a = [x or None for x in case["inputs"]["answers"]]
    return [a[s:s + G] for s in range(0, len(a), G)]


# ------------------------------------------------------------------------------------------------ golden
def test_fixture_names_its_source():
    assert FIX["source"]["repo"] == "QingyangZhang/EMPO"
    assert FIX["source"]["commit"].startswith("c5eccd40") and E.COMMIT == FIX["source"]["commit"]
    assert FIX["source"]["trl"]["file"] == E.TRL_FILE and FIX["source"]["verl"]["file"] == E.VERL_FILE
    assert {c["group_size"] for c in CASES} >= {4, 6, 7, 8, 16}


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_answers_are_what_the_authors_extract(case):
    """The harness extractor finds the answers math_verify found (the verl cases were run on these strings)."""
    got = [E.extract(t, "boxed") or "" for t in case["inputs"]["completions"]]
    assert got == case["inputs"]["answers"]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_trl_reward_matches_authors_code(case):
    """distinct_check float is the authors' code as written: rewards, cluster ids and entropy equal theirs."""
    exp, G = case["expected"]["trl"], case["group_size"]
    r, logged = _reward(case["inputs"]["completions"], G, distinct_check="float")
    assert r == pytest.approx(exp["rewards"], rel=1e-12, abs=0)
    ids = [E.cluster_ids(g, "trl") for g in _groups(case)]
    assert ids == exp["semantic_ids"]
    H = [E.semantic_entropy(torch.bincount(torch.tensor(i)).tolist()) for i in ids]
    assert H == pytest.approx(exp["semantic_entropy"], rel=1e-12, abs=1e-15)
    assert logged["empo/semantic_entropy"] == pytest.approx(sum(H) / len(H))
    assert logged["empo/n_clusters"] == pytest.approx(sum(len(set(i)) for i in ids) / len(ids))


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_default_reward_is_the_code_except_its_float_rounding(case):
    """distinct_check clusters (default): the authors' rewards, except that all-distinct groups get 0 also where the
    code's `H < ln G` float test misses them (G = 6, 7: answered responses get 1/G there)."""
    exp, G = case["expected"]["trl"], case["group_size"]
    r, _ = _reward(case["inputs"]["completions"], G)
    want = list(exp["rewards"])
    for k, ids in enumerate(exp["semantic_ids"]):
        if len(set(ids)) == G:
            want[k * G:(k + 1) * G] = [0.0] * G
    assert r == pytest.approx(want, rel=1e-12, abs=0)
    differs = r != pytest.approx(exp["rewards"], rel=1e-12, abs=0)
    assert differs == (case["name"] in {"all_distinct_g7", "all_distinct_g6"})


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_verl_reward_and_label_accuracy_match_authors_code(case):
    """Rewards and majority share as the authors' verl code; its label accuracy (the majority cluster's answer
    against the ground truth, which the harness never computes in training) from the same majority pick."""
    from harness.methods.empo import equivalent, extract, group_rewards

    exp, G = case["expected"]["verl"], case["group_size"]
    r, logged = _reward(case["inputs"]["completions"], G, reward_mode="verl")
    assert r == pytest.approx(exp["rewards"], rel=1e-12, abs=0)
    assert logged["empo/majority_ratio"] == pytest.approx(sum(exp["majority_ratio"]) / len(exp["majority_ratio"]))
    answers = [extract(c, "boxed") for c in case["inputs"]["completions"]]
    hits = []
    for k, gt in enumerate(case["inputs"]["ground_truth"]):
        _, st = group_rewards(answers[k * G:(k + 1) * G], "verl", "clusters")
        hits.append(float(equivalent(str(gt), answers[k * G + st["majority_index"]], None)))
    assert hits == pytest.approx(exp["label_accuracy"])


@pytest.mark.parametrize("mode", ["trl", "verl"])
@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_filter_reads_the_entropy_back_from_the_rewards(case, mode):
    """The data hook's entropy (from the gathered rewards) is the reward hook's; default thresholds drop exactly the
    groups whose TRL rewards the code zeroes for H >= ln G (distinct_check float: the code as written)."""
    G = case["group_size"]
    for check in ("float", "clusters"):
        r, _ = _reward(case["inputs"]["completions"], G, reward_mode=mode, distinct_check=check)
        for k, ids in enumerate(case["expected"]["trl"]["semantic_ids"]):
            sizes = E.sizes_from_rewards(r[k * G:(k + 1) * G], G)
            assert sorted(sizes) == sorted(torch.bincount(torch.tensor(ids)).tolist())
        dec = _filter(r, G, distinct_check=check)
        if check == "float" and mode == "trl":
            zeroed = [not below for below in case["expected"]["trl"]["entropy_below_log_g"]]
            assert (~dec.keep).view(-1, G)[:, 0].tolist() == zeroed


# ------------------------------------------------------------------------------------------------ invariants
def _box(n, steps=" then 3+4=7"):
    return f"{steps} so \\boxed{{{n}}}"


def test_all_distinct_group_gets_zero():
    r, logged = _reward([_box(n) for n in range(8)], 8)
    assert r == [0.0] * 8 and logged["empo/frac_all_distinct_zeroed"] == 1.0
    assert logged["empo/semantic_entropy"] == pytest.approx(math.log(8)) and logged["empo/n_clusters"] == 8
    r, _ = _reward([str(n) for n in range(4)], 4, answer_mode="plain")       # the addition smoke task
    assert r == [0.0] * 4


def test_majority_cluster_gets_its_share_with_semantic_equivalence():
    """Different reasoning, same answer: one cluster. Equivalent forms (the verifier) join it; no answer: 0."""
    texts = [_box(12), _box(" 12 ", " then 5+7=12 check 5+7=12"), _box("012"), _box(11), " then 3+4=7 so \\boxed{1",
             _box(12), _box(13), _box(12)]
    r, logged = _reward(texts, 8)
    assert r == [5 / 8, 5 / 8, 5 / 8, 1 / 8, 0.0, 5 / 8, 1 / 8, 5 / 8]
    p = torch.tensor([5, 1, 1, 1]) / 8
    assert logged["empo/semantic_entropy"] == pytest.approx(float(-(p * p.log()).sum()))
    assert logged["empo/frac_no_answer"] == 1 / 8 and logged["empo/majority_ratio"] == 5 / 8
    r, _ = _reward([_box("\\frac{1}{2}"), _box("0.5"), _box("1/2"), _box("3")], 4)
    assert r == [0.75, 0.75, 0.75, 0.25]


def test_filter_thresholds_and_confidence_mode():
    G = 4
    r = [1.0] * 4 + [0.5, 0.5, 0.25, 0.25] + [0.0] * 4 + [0.25, 0.25, 0.25, 0.0]    # H = 0, 1.04, ln 4, ln 4
    dec = _filter(r, G)
    assert dec.keep.view(-1, G)[:, 0].tolist() == [True, True, False, False]
    assert dec.metrics["empo/frac_filtered"] == 0.5
    dec = _filter(r, G, delta_low=0.5, delta_high=1.2)
    assert dec.keep.view(-1, G)[:, 0].tolist() == [False, True, False, False]
    dec = _filter(r, G, group_filter="confidence", confidence_lower_bound=0.3)   # verl: max score in [0.3, 1]
    assert dec.keep.view(-1, G)[:, 0].tolist() == [True, True, False, False]
    assert _filter(r, G, group_filter="none") is None
    bctx = BatchContext(stage="prompts", group_size=G, rows=[{"prompt": "p"}])
    assert METHOD.hook("data")(bctx, **METHOD.resolve({})) is None


def test_filter_refuses_rewards_that_are_not_cluster_shares():
    with pytest.raises(ValueError, match="not EMPO cluster shares"):
        _filter([1.0, 0.3, 0.0, 0.0], 4)


def test_registration_is_label_free():
    assert METHOD.label_free and METHOD.task_reward_weight == 0.0 and set(METHOD.hooks) == {"reward", "data"}
    hp = METHOD.resolve({})
    assert (hp["reward_mode"], hp["distinct_check"], hp["group_filter"]) == ("trl", "clusters", "none")


@pytest.mark.parametrize("key,value,valid", [("reward_mode", "log_p", "trl, verl"),
                                             ("answer_mode", "last_line", "boxed, plain"),
                                             ("distinct_check", "exact", "clusters, float"),
                                             ("group_filter", "length", "entropy, confidence, none")])
def test_unknown_mode_names_the_valid_choices(key, value, valid):
    with pytest.raises(ValueError, match=f"unknown {key} '{value}'; valid: {valid}"):
        _reward([_box(1), _box(1)], 2, **{key: value})
    if key == "group_filter":
        with pytest.raises(ValueError, match=f"valid: {valid}"):
            _filter([1.0, 1.0], 2, group_filter=value)


def test_bad_settings_are_errors():
    with pytest.raises(ValueError, match="delta_low .* below delta_high"):
        _filter([1.0, 1.0], 2, delta_low=1.0, delta_high=0.5)
    with pytest.raises(ValueError, match="confidence_lower_bound <= confidence_upper_bound"):
        _filter([1.0, 1.0], 2, group_filter="confidence", confidence_lower_bound=0.8, confidence_upper_bound=0.2)
    with pytest.raises(RegistryError, match="delta_high must be float or null"):
        METHOD.resolve({"delta_high": "ln G"})
    with pytest.raises(ValueError, match="not whole groups"):
        _reward([_box(1)] * 3, 2)


# ------------------------------------------------------------------------------------------------ training
class AnswerRead(AssertionError):
    """Raised by :class:`Poison` on any use of a dataset answer's value."""


#: attribute look-ups on poisoned answers (type probes such as accelerate's ``hasattr(x, "to")``), in order
PROBES: list[str] = []


class Poison:
    """A dataset ``answer`` that raises on any use of its value (str/repr, comparison, hashing, truth, iteration,
    conversion, copying, pickling). Looking up an attribute is recorded in :data:`PROBES` and fails like a missing
    attribute (``AttributeError``), so type probes proceed and any method call on it still fails."""

    __slots__ = ()

    def __getattribute__(self, name):
        if name == "__class__":
            return Poison
        PROBES.append(name)
        raise AttributeError(f"the answer column was probed (.{name})")


def _raiser(name):
    def f(self, *a, **k):
        raise AnswerRead(f"the answer column was read ({name})")
    return f


for _n in ("__str__", "__repr__", "__format__", "__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__",
           "__hash__", "__bool__", "__len__", "__iter__", "__getitem__", "__contains__", "__int__", "__float__",
           "__reduce__", "__reduce_ex__", "__copy__", "__deepcopy__", "__getstate__"):
    setattr(Poison, _n, _raiser(_n))


def _poisoned(batch: dict) -> dict:
    """Dataset transform: every answer it hands out is a :class:`Poison`."""
    return {**batch, "answer": [Poison() for _ in batch["answer"]]} if "answer" in batch else batch


def _train_once(tiny_base, tmp_path, *, answers: str, task_reward: bool, **hp):
    """One optimizer step of EMPO on the tiny addition model (answer_mode plain). ``answers``: true | garbage |
    poison. Returns what the loss saw, the rewards per function, the logs, the trained model and the answers the
    task's reward function was handed."""
    from datasets import Dataset

    from harness.data import smoke

    rows = smoke.rows(smoke.split_pairs(512, 1234)[0][:64])
    if answers == "garbage":
        rows = [{**r, "answer": "-1"} for r in rows]
    data = Dataset.from_list(rows)
    if answers == "poison":
        data = data.with_transform(_poisoned)
    handed: list = []

    def exact_match_reward(completions, answer, **kw):  # the task's reward, recording what it is handed
        handed.extend(answer)
        return smoke.exact_match_reward(completions, answer, **kw)

    trainer, _, records = tiny_grpo_trainer(tiny_base, tmp_path / answers, METHOD,
                                            reward_funcs=[exact_match_reward] if task_reward else [],
                                            hparams={"answer_mode": "plain", "group_filter": "entropy", **hp},
                                            rows=data, max_steps=1, per_device_train_batch_size=32,
                                            num_generations=8, max_completion_length=4, learning_rate=1e-3,
                                            temperature=0.5, loss_type="bnpo", beta=0.0)
    seen: list[dict] = []
    inner = trainer._compute_loss

    def spy(model, inputs):
        seen.append({k: v.detach().clone() for k, v in inputs.items() if torch.is_tensor(v)})
        return inner(model, inputs)

    trainer._compute_loss = spy
    trainer.train()
    return seen, trainer._last_rewards_per_func.clone(), records, trainer.model, handed


def test_training_step_never_touches_the_answer_column(tiny_base, tmp_path):
    """Every dataset answer raises on any use of its value; the task's reward function is passed to the trainer too.
    A label-free method's training step runs to the end: the trainer removed the answer column and the task's reward
    from training, so nothing met an answer, not even a type probe, and the task's reward was never called."""
    PROBES.clear()
    seen, rpf, logs, _, handed = _train_once(tiny_base, tmp_path, answers="poison", task_reward=True)
    assert PROBES == [] and handed == []
    assert len(seen) == 1 and rpf.shape == (32, 1)                   # EMPO's reward is the only reward function
    row = next(m for m in logs if "empo/semantic_entropy" in m)
    for k in ("empo/semantic_entropy", "empo/n_clusters", "empo/frac_filtered", "rewards/empo_reward/mean"):
        assert k in row
    assert 1.0 <= row["empo/n_clusters"] <= 8.0
    assert not any(k.startswith("rewards/exact_match") for m in logs for k in m)


def test_garbage_answers_change_nothing_the_policy_learns_from(tiny_base, tmp_path):
    """True vs garbage answers: the EMPO rewards, the advantages the loss sees, the loss masks and the updated weights
    are identical, and non-trivial."""
    a_seen, a_rpf, a_logs, a_model, a_answers = _train_once(tiny_base, tmp_path, answers="true", task_reward=True)
    b_seen, b_rpf, b_logs, b_model, b_answers = _train_once(tiny_base, tmp_path, answers="garbage", task_reward=True)
    torch.testing.assert_close(a_rpf, b_rpf, rtol=0, atol=0)
    for k in ("advantages", "completion_ids", "completion_mask", "tool_mask"):
        torch.testing.assert_close(a_seen[0][k], b_seen[0][k], rtol=0, atol=0)
    assert a_seen[0]["advantages"].abs().sum() > 0                                 # there was something to learn
    for (n, p), (_, q) in zip(a_model.named_parameters(), b_model.named_parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=n)
    assert a_answers == b_answers == []                                           # the task's reward never ran


def test_a_labelled_method_still_hands_the_answers_to_the_task_reward(tiny_base, tmp_path):
    """The control of the two tests above: the same run with EMPO registered as not label-free reads the poisoned
    answers in the task's reward (so the poison would catch a reader)."""
    import dataclasses

    global METHOD
    saved = METHOD
    METHOD = dataclasses.replace(saved, label_free=False)
    try:
        with pytest.raises(AnswerRead) as e:
            _train_once(tiny_base, tmp_path, answers="poison", task_reward=True)
    finally:
        METHOD = saved
    assert "exact_match_reward" in [f.name for f in e.traceback]


# ------------------------------------------------------------------------------------------------ claim checks
def _eval(method, seed, n_correct, k=8):
    from harness.results.protocol import protocol_fields, protocol_hash

    fields = protocol_fields(benchmark="reasoning_heldout", data_sha256="ab" * 32, prompt_template="rows",
                             chat_template=None, sampling={"do_sample": True, "temperature": 1.0}, max_gen_toks=80,
                             k=k, verifier={"name": "boxed"}, seeds={"eval": 0})
    per_problem = [{"id": i, "n_correct": int(c)} for i, c in enumerate(n_correct)]
    return {"source": {"method": method, "seed": seed},
            "benchmarks": {"heldout": {"k": k, "protocol_hash": protocol_hash(fields), "per_problem": per_problem}},
            "protocol": {"benchmarks": {"heldout": fields}}}


def _check(name):
    from harness.claims.registry import all_checks

    return all_checks()[name]


def test_eval_above_base_check():
    rng = torch.Generator().manual_seed(0)
    base = torch.randint(0, 5, (200,), generator=rng)                      # the base model answers 0-4 of 8
    better = [_eval("empo", s, (base + torch.randint(1, 4, (200,), generator=rng)).clamp(max=8)) for s in (42, 7, 1)]
    worse = [_eval("empo", s, (base - torch.randint(1, 4, (200,), generator=rng)).clamp(min=0)) for s in (42, 7, 1)]
    fn = _check("empo_eval_above_base")
    v, n = fn([], "empo", evals=better + [_eval("base", None, base)])
    assert v == "reproduced" and n["ci"][0] > 0 and set(n["per_seed_diff"]) == {42, 7, 1}
    assert fn([], "empo", evals=worse + [_eval("base", None, base)])[0] == "not_reproduced"
    assert fn([], "empo", evals=better[:1] + [_eval("base", None, base)])[0] == "inconclusive"   # one seed
    assert fn([], "empo", evals=better)[0] == "inconclusive"                                       # no base eval


def test_eval_matches_baseline_check_is_non_inferiority():
    rng = torch.Generator().manual_seed(1)
    grpo = [_eval("grpo", s, torch.randint(3, 6, (300,), generator=rng)) for s in (42, 7, 1)]
    same = [_eval("empo", s, torch.randint(3, 6, (300,), generator=rng)) for s in (42, 7, 1)]
    far = [_eval("empo", s, torch.randint(0, 3, (300,), generator=rng)) for s in (42, 7, 1)]
    fn = _check("empo_eval_matches_baseline")
    v, n = fn([], "empo", "grpo", 0.05, evals=same + grpo)
    assert v == "reproduced" and n["ci"][0] > -0.05
    assert fn([], "empo", "grpo", 0.05, evals=far + grpo)[0] == "not_reproduced"
    assert fn([], "empo", "grpo", 0.05, evals=same[:1] + grpo)[0] == "inconclusive"


def test_train_metric_drop_check():
    def run(seed, values):
        return {"job": {"method": "empo", "seed": seed},
                "metrics": [{"step": s, "empo/semantic_entropy": v} for s, v in enumerate(values, 1)]}

    falling = [1.2 - 0.01 * i for i in range(100)]
    fn = _check("empo_train_metric_drop")
    kw = dict(metric="empo/semantic_entropy", window_fraction=0.2, min_rel_drop=0.2)
    v, n = fn([run(42, falling), run(7, falling)], "empo", **kw)
    assert v == "reproduced" and n["per_seed"][42]["spearman_vs_step"] == pytest.approx(-1.0)
    assert fn([run(42, falling), run(7, [1.0] * 100)], "empo", **kw)[0] == "not_reproduced"
    assert fn([run(42, falling)], "empo", **kw)[0] == "inconclusive"


def test_card_claims_use_registered_checks_and_the_label_free_setup():
    from harness.claims.registry import all_checks
    from harness.config import load_card
    from harness.plan import resolve_job

    card = load_card("empo")
    for c in card["claims"]:
        assert c["check"] in all_checks(), c["id"]
    smoke = [c for c in card["claims"] if c["tier"] == ["smoke-reasoning"]]
    assert {c["check"] for c in smoke} == {"empo_eval_above_base", "empo_train_metric_drop",
                                           "empo_eval_matches_baseline"}
    hp = resolve_job("empo", "smoke-reasoning", "empo", 42)["hparams"]
    assert hp["answer_mode"] == "boxed" and hp["group_filter"] == "entropy"
    assert resolve_job("empo", "smoke", "empo", 42)["hparams"]["answer_mode"] == "plain"
    assert resolve_job("empo", "paper", "empo", 42)["hparams"]["reward_mode"] == "verl"
