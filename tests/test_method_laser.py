"""LASER / LASER-D / LASER-DE against numbers computed with the authors' code: tests/fixtures/laser_golden.json, from
hkust-nlp/Laser @ c9e7c4ef (``length_penalty.py`` ``compute_length_reward_larse`` / ``_larse_d`` / ``_larse_de`` and
``_choose_target_length``, the monitor's ``ray_trainer._count_accuracy_bands_metrics``, the repetition detector of
``compute_unique_tokens.py`` and the base reward ``hf_math_verifier.compute_score``). The reward cases go through the
registered hooks: the batch is scored on a fresh trainer state (first training call: the monitor is refreshed from
that batch, as the authors' initial monitor pass) or after a separate monitor batch.

Regenerate / re-check the fixture from the authors' code (loaded at run time, none is committed):

    git clone https://github.com/hkust-nlp/Laser /tmp/Laser && git -C /tmp/Laser checkout c9e7c4ef
    python tests/fixtures/generators/laser.py /tmp/Laser            # check; --write rewrites `expected`
"""
import json
import random
from pathlib import Path

import pytest
import torch

from harness.methods import laser as L
from harness.methods.context import RewardContext
from harness.methods.registry import RegistryError, get_method
from conftest import tiny_grpo_trainer

FIX = json.loads((Path(__file__).parent / "fixtures" / "laser_golden.json").read_text())
CASES = {c["name"]: c for c in FIX["cases"]}
REWARD_CASES = [c for c in FIX["cases"] if c["kind"] in ("laser", "laser_d", "laser_de")]
TEXT = {1.0: " then 3+4=7 so \\boxed{7}", -0.5: " then 3+4=8 so \\boxed{8}", -1.0: " then 3+4=7 so"}


def _rctx(scores, lengths, G, *, tokens=None, training=True, generator=None, log=None):
    """A batch of the smoke reasoning task whose base rewards are ``scores`` (answer 7) and lengths ``lengths``."""
    n = len(scores)
    ids = tokens if tokens is not None else [[5] * n_tok for n_tok in lengths]
    return RewardContext(prompts=["3+4="] * n, completions=[TEXT[s] for s in scores], completion_ids=ids,
                         group_size=G, answers=["7"] * n, generator=generator, training=training,
                         log_metric=(lambda k, v: log.setdefault(k, []).append(v)) if log is not None else None)


def _hook(name, rctx, **over):
    m = get_method(name)
    return m.hook("reward")(rctx, **m.resolve({"answer_format": "boxed", **over}))


def _run_case(case, log=None):
    i, hp, G = case["inputs"], case["hparams"], case["group_size"]
    gen = torch.Generator().manual_seed(0)
    if "monitor" in i:  # the monitor batch is scored first (its refresh), then the case's batch
        _hook(case["kind"], _rctx(i["monitor_scores"], i["monitor"]["lengths"], i["monitor"]["group_size"],
                                  generator=gen), **hp)
    return _hook(case["kind"], _rctx(i["scores"], i["lengths"], G, tokens=i.get("tokens"), generator=gen, log=log),
                 **hp)


# ------------------------------------------------------------------------------------------------ golden ---
def test_fixture_names_its_source():
    assert FIX["source"]["repo"] == "hkust-nlp/Laser" and FIX["source"]["commit"].startswith("c9e7c4ef")
    assert L.COMMIT == FIX["source"]["commit"]
    assert {"laser", "laser_d", "laser_de", "repetition", "base_score"} == {c["kind"] for c in FIX["cases"]}


@pytest.mark.parametrize("case", REWARD_CASES, ids=[c["name"] for c in REWARD_CASES])
def test_rewards_match_authors_code(case):
    log: dict = {}
    rewards = _run_case(case, log)
    exp = case["expected"]
    assert rewards == pytest.approx(exp["rewards"], abs=1e-12)
    base = case["inputs"]["scores"]
    assert [r - s for r, s in zip(rewards, base)] == pytest.approx(exp["length_terms"], abs=1e-12)
    if "targets" in exp:
        for lv in L.LEVELS:
            assert log[f"laser/bucket_targets/{lv}"][-1] == exp["targets"][lv]
    else:
        assert {log[f"laser/bucket_targets/{lv}"][-1] for lv in L.LEVELS} == {case["hparams"]["target_length"]}
    assert log["laser/frac_bonus"][-1] == pytest.approx(sum(t > 0 for t in exp["length_terms"]) / len(rewards))


@pytest.mark.parametrize("case", [c for c in REWARD_CASES if c["kind"] != "laser"],
                         ids=[c["name"] for c in REWARD_CASES if c["kind"] != "laser"])
def test_targets_per_response_and_repetition_flags_match(case):
    """The pure functions: monitor coverage -> targets per bucket -> each response's L_T; the detector's flags."""
    i, hp, G, exp = case["inputs"], case["hparams"], case["group_size"], case["expected"]
    grid = L.length_grid(hp["lower_bound"], hp["upper_bound"], hp["interval"])
    assert grid == exp["grid"]
    mon = i.get("monitor") or {"lengths": i["lengths"], "group_size": G,
                               "correctness": [float(s == 1.0) for s in i["scores"]]}
    mg = mon["group_size"]
    groups = [(mon["correctness"][g:g + mg], mon["lengths"][g:g + mg]) for g in range(0, len(mon["lengths"]), mg)]
    targets = L.choose_targets(L.coverage(groups, grid), grid, max(i["lengths"]),
                               round_method=hp.get("round_method", "floor"))
    assert targets == exp["targets"]
    levels = [L.bucket(sum(s == 1.0 for s in i["scores"][g:g + G]) / G) for g in range(0, len(i["scores"]), G)]
    assert [targets[levels[k // G]] for k in range(len(i["scores"]))] == exp["per_response_target"]
    if case["kind"] == "laser_de" and hp["repetition_filter"] == "ngram":
        flags = [float(L.repetition_start(t) < len(t)) for t in i["tokens"]]
        checked = [s == -0.5 and n > t for s, n, t in zip(i["scores"], i["lengths"], exp["per_response_target"])]
        assert [f if c else 0.0 for f, c in zip(flags, checked)] == exp["repeated"]
        assert any(exp["repeated"])


def test_repetition_detector_matches_and_the_released_call_never_fires():
    case = CASES["repetition_detector"]
    seqs, exp = case["inputs"]["sequences"], case["expected"]
    assert [L.repetition_start(s) for s in seqs] == exp["start_on_ids"]
    assert any(a < len(s) for a, s in zip(exp["start_on_ids"], seqs))        # the detector does find repeats ...
    assert exp["start_on_tensor_slice"] == [len(s) for s in seqs]            # ... but never on the tensor slice
    released = CASES["laser_de_as_released"]["expected"]
    assert not any(released["repeated"])


def test_base_reward_matches_authors_compute_score():
    case = CASES["base_reward_think"]
    exp = case["expected"]
    got = [L.base_score(r["prompt"], r["response"], r["answer"], "think") for r in case["inputs"]["rows"]]
    assert [s for s, _ in got] == exp["score"]
    # correctness of boxed answers agrees; unboxed (-1) rows differ by extractor (qwen's last-number fallback)
    boxed = [bool(c) for c, s in zip(exp["correctness"], exp["score"]) if s != -1.0]
    assert [ok for (s, ok) in got if s != -1.0] == boxed


def test_default_is_the_authors_laser_de_l4096():
    de = get_method("laser_de").resolve({})
    assert (de["length_reward_scalar"], de["lower_bound"], de["upper_bound"]) == (0.5, 4096, 16384)
    assert de["interval"] == 1024
    assert (de["monitor_freq"], de["monitor_prompts"], de["n_rollout"], de["expected_n_correct"]) == (20, 500, 8, 1)
    assert de["round_method"] == "floor" and de["answer_format"] == "think" and de["repetition_filter"] == "as_released"
    assert get_method("laser").resolve({})["target_length"] == 4096
    for name in ("laser", "laser_d", "laser_de"):
        m = get_method(name)
        assert m.point == "reward" and m.task_reward_weight == 0.0 and m.paper == "laser"


# -------------------------------------------------------------------------------------------- invariants ---
def _random_batch(seed, n_groups=6, G=8):
    rng = random.Random(seed)
    scores = [rng.choice([1.0, -0.5, -1.0]) for _ in range(n_groups * G)]
    lengths = [rng.randint(3, 80) for _ in scores]
    return scores, lengths, G


@pytest.mark.parametrize("name", ["laser", "laser_d", "laser_de"])
def test_lambda_zero_is_the_base_reward(name):
    scores, lengths, G = _random_batch(1)
    smoke = {} if name == "laser" else {"lower_bound": 20, "upper_bound": 80, "interval": 5}
    out = _hook(name, _rctx(scores, lengths, G, generator=torch.Generator()), length_reward_scalar=0.0,
                target_length=40, **smoke)
    assert out == scores
    with_bonus = _hook(name, _rctx(scores, lengths, G, generator=torch.Generator()), length_reward_scalar=0.5,
                       target_length=40, **smoke)
    assert with_bonus != scores


@pytest.mark.parametrize("lam", [0.5, 0.3, 1.0])
def test_correct_within_target_gets_exactly_base_plus_lambda(lam):
    scores = [1.0, 1.0, 1.0, -0.5, -0.5, -1.0, 1.0, -0.5]
    lengths = [10, 40, 41, 10, 60, 10, 39, 39]
    out = _hook("laser", _rctx(scores, lengths, 4), length_reward_scalar=lam, target_length=40)
    assert out == [1.0 + lam, 1.0 + lam, 1.0, -0.5, -0.5, -1.0, 1.0 + lam, -0.5]
    de = L.shape(scores, lengths, [40] * 8, lam, explore=True)[0]   # LASER-DE: wrong and over target: + lambda
    assert de == [1.0 + lam, 1.0 + lam, 1.0, -0.5, -0.5 + lam, -1.0, 1.0 + lam, -0.5]


def test_bucket_assignment_at_the_code_thresholds():
    """Training buckets (length_penalty.py): high >= 2/3 > medium >= 1/3 > low; monitor bands (ray_trainer.py):
    low <= 1/3 < medium <= 2/3 < high. With G = 8 they agree; at exactly 1/3 and 2/3 (G = 6, 3) they differ."""
    assert [L.bucket(k / 8) for k in range(9)] == ["low"] * 3 + ["medium"] * 3 + ["high"] * 3
    assert [L.monitor_band(k / 8) for k in range(9)] == ["low"] * 3 + ["medium"] * 3 + ["high"] * 3
    assert [L.bucket(k / 6) for k in range(7)] == ["low"] * 2 + ["medium"] * 2 + ["high"] * 3
    assert [L.monitor_band(k / 6) for k in range(7)] == ["low"] * 3 + ["medium"] * 2 + ["high"] * 2
    # the hook buckets by the share of C(y) = +1 in each group
    log: dict = {}
    scores = [1.0] * 6 + [-0.5] * 2 + [1.0] * 3 + [-1.0] * 5 + [-0.5] * 8
    _hook("laser_d", _rctx(scores, [30] * 24, 8, generator=torch.Generator(), log=log),
          lower_bound=20, upper_bound=80, interval=5)
    assert [log[f"laser/bucket_frac/{lv}"][-1] for lv in L.LEVELS] == pytest.approx([1 / 3, 1 / 3, 1 / 3])


def test_choose_targets_floor_and_ceil():
    grid = [20, 25, 30]
    cov = {"low": {20: 0.5, 25: 0.9, 30: 1.0}, "medium": {20: 0.4, 25: 0.5, 30: 0.8},
           "high": {20: 0.1, 25: 0.2, 30: 0.9}}
    # floor: high needs int(5 c) >= 1 (c >= 0.2), medium int(2 c) >= 1 (c >= 0.5), low c = 1
    assert L.choose_targets(cov, grid, 80) == {"low": 30, "medium": 25, "high": 25}
    # ceil: high 6 c >= 1, medium 3 c >= 1, low c >= 1
    assert L.choose_targets(cov, grid, 80, round_method="ceil") == {"low": 30, "medium": 20, "high": 25}
    # a grid length at or above the batch's longest response is never chosen
    assert L.choose_targets(cov, grid, 25) == {"low": 25, "medium": 25, "high": 25}


def test_monitor_refreshes_every_monitor_freq_training_batches_only():
    gen, log = torch.Generator(), {}
    G, hp = 8, dict(lower_bound=20, upper_bound=80, interval=5, monitor_freq=3, monitor_prompts=4)
    short = ([1.0] * 8, [22] * 8)            # an easy group, all at 22 tokens
    long_ = ([1.0] * 8, [61] * 8)            # an easy group, all at 61 tokens

    def call(batch, training=True):
        _hook("laser_d", _rctx(batch[0] * 4, batch[1] * 4, G, generator=gen, training=training, log=log), **hp)
        return log["laser/bucket_targets/high"][-1], log["laser/monitor_refreshes"][-1]

    assert call(short) == (22, 1)             # first training batch: refreshed from itself (25 > batch max 22)
    assert call(long_) == (25, 1)             # coverage kept; batch max 61 > 25
    assert call(long_, training=False) == (25, 1)   # evaluation: no update
    assert call(long_) == (25, 1)
    assert call(long_) == (61, 2)             # 3rd training batch after the refresh: window = the last 4 (long) groups
    fresh = {}
    _hook("laser_d", _rctx([1.0] * 8, [61] * 8, G, generator=torch.Generator(), training=False, log=fresh), **hp)
    assert fresh["laser/bucket_targets/high"][-1] == 8192   # no monitor yet: target_length for every bucket


# -------------------------------------------------------------------------------------------- bad input ----
@pytest.mark.parametrize("over, needle", [
    ({"answer_format": "xml"}, "answer_format 'xml'; valid: think, boxed, plain"),
    ({"length_reward_type": "linear"}, "length_reward_type 'linear'; valid: reward, penalty, hybrid"),
    ({"round_method": "nearest"}, "round_method 'nearest'; valid: floor, ceil"),
    ({"lower_bound": 90, "upper_bound": 80}, "lower_bound <= upper_bound"),
    ({"monitor_freq": 0}, "monitor_freq and monitor_prompts must be >= 1"),
])
def test_bad_settings_are_clear_errors(over, needle):
    scores, lengths, G = _random_batch(2)
    with pytest.raises(ValueError, match=needle.replace("(", r"\(")):
        _hook("laser_d", _rctx(scores, lengths, G, generator=torch.Generator()), **over)


def test_bad_repetition_filter_type_and_missing_answers():
    scores, lengths, G = _random_batch(3)
    with pytest.raises(ValueError, match="repetition_filter 'exact'; valid: as_released, ngram"):
        _hook("laser_de", _rctx(scores, lengths, G), repetition_filter="exact")
    with pytest.raises(RegistryError, match="length_reward_scalar must be float"):
        get_method("laser").resolve({"length_reward_scalar": "0.5"})
    with pytest.raises(RegistryError, match="has no hyperparameter 'repetition_filter'"):
        get_method("laser_d").resolve({"repetition_filter": "ngram"})
    rctx = _rctx(scores, lengths, G)
    rctx.answers = None
    with pytest.raises(ValueError, match="needs the dataset's answer column"):
        _hook("laser", rctx)


# ---------------------------------------------------------------------------------------- real training ----
@pytest.mark.parametrize("name", ["laser", "laser_d", "laser_de"])
def test_one_training_step_on_the_smoke_model(tiny_base, tmp_path, name):
    """The reward hook inside HarnessGRPOTrainer on the tiny smoke model (addition task, answer_format plain): the
    method's reward replaces the task's (weight 0), its metrics are logged, every reward is C(y) (+ lambda)."""
    from harness.data import smoke

    seen: list[float] = []
    m = get_method(name)
    hp = {"answer_format": "plain", "target_length": 3}
    if name != "laser":
        hp.update(lower_bound=2, upper_bound=4, interval=1, monitor_freq=1, monitor_prompts=8)
    hook = m.hook("reward")
    trainer, _, rows = tiny_grpo_trainer(tiny_base, tmp_path / name, m, reward_funcs=[smoke.exact_match_reward],
                                         hparams=hp, rows=smoke.rows(smoke.split_pairs(512, 1234)[0][:32]),
                                         max_steps=1, per_device_train_batch_size=8, num_generations=4,
                                         max_completion_length=4, learning_rate=1e-4)
    m.hooks["reward"] = lambda rctx, **kw: seen.extend(out := hook(rctx, **kw)) or out
    try:
        trainer.train()
    finally:
        m.hooks["reward"] = hook
    assert trainer.reward_weights.tolist() == [0.0, 1.0]
    row = next(r for r in rows if f"rewards/{name}_reward/mean" in r)
    assert row["reward"] == pytest.approx(row[f"rewards/{name}_reward/mean"])
    for key in ("laser/mean_length", "laser/frac_bonus", *(f"laser/bucket_targets/{lv}" for lv in L.LEVELS)):
        assert key in row, key
    assert 1.0 <= row["laser/mean_length"] <= 4.0
    assert len(seen) == 8 and set(seen) <= {1.5, 1.0, -0.5, -1.0, 0.0}
