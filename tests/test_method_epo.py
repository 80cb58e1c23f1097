"""EPO (harness/methods/epo.py): golden values from the authors' code (WujiangXu/EPO @ 5b6fa98e: the rollout loop's
per-step entropy, ``fit``'s padded entropy history, ``update_policy``'s loss with ``generate_entropy_penalty`` and the
phase weight; tests/fixtures/generators/epo.py), the paper variant's differentiable band penalty (hand-derived), the
per-token turn ids reaching the loss through TRL's shuffle and micro-batch split, and checkpointed state."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from harness.methods import epo as E
from harness.methods.context import AdvantageContext, TokenContext
from harness.methods.registry import get_method

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "epo_golden.json").read_text())
CASES = {c["name"]: c for c in FIXTURE["cases"]}


def _episodes(trajs: list[dict]):
    """The harness layout of a fixture rollout: one completion per trajectory, model turns separated by environment
    replies (masked, entropy 9.0 that must not count), per-token turn ids."""
    rows, turns, ents = [], [], []
    for t in trajs:
        m, tid, e = [], [], []
        for k, te in enumerate(t["turn_entropies"]):
            m += [1] * len(te) + [0] * t["reply_len"]
            tid += [k] * (len(te) + t["reply_len"])
            e += te + [9.0] * t["reply_len"]
        rows.append(m), turns.append(tid), ents.append(e)
    width = max(len(m) for m in rows)
    pad = lambda xs, v: torch.tensor([x + [v] * (width - len(x)) for x in xs])  # noqa: E731
    n = len(trajs)
    return AdvantageContext(rewards=torch.arange(n, dtype=torch.float32), group_size=n, mask=pad(rows, 0).float(),
                            completion_ids=torch.ones(n, width, dtype=torch.long), entropies=pad(ents, 0.0).float(),
                            columns={"turn_ids": turns}, scale_rewards="none")


def test_history_matches_authors_code():
    case = CASES["history_pad_and_truncate"]
    gen = torch.Generator().manual_seed(0)
    for trajs, want in zip(case["inputs"]["rollouts"], case["expected"]["history_after_each_rollout"]):
        actx = _episodes(trajs)
        actx.generator = gen
        adv, m = get_method("epo").hook("advantage")(actx, **get_method("epo").hook_hparams(case["hparams"]))
        assert torch.equal(adv, actx.grpo_advantages())  # advantages untouched
        got = E.history(gen, "released")
        assert got.tolist() == pytest.approx(want, rel=1e-6, abs=1e-7)  # the authors' per-step means are float32


def test_paper_history_is_per_step_index():
    case = CASES["history_pad_and_truncate"]
    gen = torch.Generator().manual_seed(0)
    per_rollout = []
    for trajs in case["inputs"]["rollouts"]:
        actx = _episodes(trajs)
        actx.generator = gen
        E.epo_history(actx, max_env_steps=4)
        per_rollout.append(E.batch_step_entropies(actx.entropies, E.step_index(actx)))
    want = [sum(r[s] for r in per_rollout if len(r) > s) / sum(len(r) > s for r in per_rollout) for s in range(5)]
    assert E.history(gen, "paper").tolist() == pytest.approx(want)
    # the released history shifts short rollouts (zero left-padding) and cuts long ones to the last 4 steps
    assert E.history(gen, "released").tolist() != pytest.approx(want[:4])


def _loss_ctx(case: dict):
    i = case["inputs"]
    ent = torch.tensor(i["entropy"], dtype=torch.float64, requires_grad=True)
    logp = torch.tensor(i["log_prob"], dtype=torch.float64, requires_grad=True)
    mask = torch.tensor(i["response_mask"], dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    hist = torch.tensor(i["entropy_history"], dtype=torch.float64)
    E.STATE.load_state_dict(gen, {"rows_sum": hist, "rows_n": 1, "step_sum": hist, "step_n": torch.ones_like(hist)})
    turns = torch.tensor(i["rollout_step"])[:, None].expand_as(mask)  # verl: one environment step per sample
    ctx = TokenContext.build(logp, torch.tensor(i["old_log_prob"], dtype=torch.float64),
                             torch.tensor(i["advantages"], dtype=torch.float64), mask, entropies=ent, generator=gen,
                             step=i["trainer_epoch"], token_columns={"turn_ids": turns})
    return ctx, ent, logp, mask


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c["kind"] == "loss"])
def test_loss_and_gradients_match_authors_code(name):
    case = CASES[name]
    ctx, ent, logp, mask = _loss_ctx(case)
    hp = get_method("epo").hook_hparams({**case["hparams"], "max_env_steps": 30})
    per_token, m = E.epo(ctx, **hp)
    loss = (per_token * mask).sum() / mask.sum()  # the trainer's bnpo = verl's token-mean
    loss.backward()
    exp = case["expected"]
    # rel 1e-7: the code's torch.where(within, 0, penalty) makes the penalty a float32 constant
    assert float(loss.detach()) == pytest.approx(exp["loss"], rel=1e-7, abs=1e-12)
    torch.testing.assert_close(logp.grad, torch.tensor(exp["grad_log_prob"], dtype=torch.float64))
    torch.testing.assert_close(ent.grad, torch.tensor(exp["grad_entropy"], dtype=torch.float64))
    assert m["epo/gate"] == float(max(case["inputs"]["rollout_step"]) >= 25)  # the code: max_step // 2 = 25
    # the released penalty has no gradient: d loss / d H is the plain bonus, -c_H / N on every valid token
    want = -hp["entropy_coeff"] / mask.sum() * mask
    torch.testing.assert_close(ent.grad, want)


def test_phase_weights_match_authors_code():
    case = CASES["phase_weight"]
    got = [E.phase_weight(e, m) for e, m in case["inputs"]["points"]]
    assert got == pytest.approx(case["expected"]["weights"], rel=1e-12)


def test_paper_penalty_gradient_hand_derived():
    """Two trajectories, steps 0/1; H_hist = [1, 1], band [0.5, 1.5]: trajectory 0 step 0 has mean 2.0 (0.5 above),
    step 1 mean 1.0 (inside); trajectory 1 step 0 mean 0.25 (0.25 below). dL/dH_t = c_H / N (2 c_s w d - 1)."""
    ent = torch.tensor([[1.5, 2.5, 1.0, 0.0], [0.25, 0.0, 0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]], dtype=torch.float64)
    turns = torch.tensor([[0, 0, 1, -1], [0, -1, -1, -1]])
    gen = torch.Generator().manual_seed(0)
    E.STATE.load_state_dict(gen, {"rows_sum": torch.ones(2, dtype=torch.float64), "rows_n": 1,
                                  "step_sum": torch.ones(2, dtype=torch.float64), "step_n": torch.ones(2)})
    logp = torch.zeros(2, 4, dtype=torch.float64, requires_grad=True)
    ctx = TokenContext.build(logp, logp.detach(), torch.zeros(2), mask, entropies=ent, generator=gen, step=0,
                             token_columns={"turn_ids": turns})
    hp = get_method("epo_paper").hook_hparams({"entropy_coeff": 0.1, "smooth_coeff": 2.0, "min_ratio": 0.5,
                                               "max_ratio": 1.5, "smooth_from_step": 1, "smooth_weights": False})
    per_token, m = E.epo_paper(ctx, **hp)
    n, c_h, c_s = 4.0, 0.1, 2.0
    loss = (per_token * mask).sum() / n
    d = {(0, 0): 0.5, (0, 1): 0.0, (1, 0): -0.25}
    want_loss = (-c_h * (1.5 + 2.5 + 1.0 + 0.25) + c_h * c_s * (2 * 0.5 ** 2 + 0.25 ** 2)) / n
    assert float(loss.detach()) == pytest.approx(want_loss)
    loss.backward()
    want = torch.zeros(2, 4, dtype=torch.float64)
    for (i, s), di in d.items():
        for t in range(4):
            if turns[i, t] == s:
                want[i, t] = c_h / n * (2 * c_s * di - 1)
    torch.testing.assert_close(ent.grad, want)
    assert m["epo/in_band_frac"] == pytest.approx(1 / 3) and m["epo/penalised_token_frac"] == pytest.approx(3 / 4)
    # below smooth_from_step the smoothing is off: a plain bonus
    ent.grad = None
    per_token, m = E.epo_paper(ctx, **{**hp, "smooth_from_step": 2})
    ((per_token * mask).sum() / n).backward()
    torch.testing.assert_close(ent.grad, -c_h / n * mask)
    assert m["epo/gate"] == 0.0


def test_state_round_trip_and_errors():
    m = get_method("epo")
    gen = torch.Generator().manual_seed(1)
    assert m.state_dict(gen) == {}
    actx = _episodes(CASES["history_pad_and_truncate"]["inputs"]["rollouts"][1])
    actx.generator = gen
    E.epo_history(actx, max_env_steps=4)
    snap = m.state_dict(gen)
    assert set(snap) == set(E.KEYS)
    other = torch.Generator().manual_seed(2)
    m.load_state_dict(other, snap)
    assert torch.equal(E.history(other, "released"), E.history(gen, "released"))
    with pytest.raises(ValueError, match="max_env_steps changed"):
        E.epo_history(actx, max_env_steps=5)
    ctx = TokenContext.build(torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1), torch.ones(1, 2),
                             entropies=torch.ones(1, 2), generator=gen,
                             token_columns={"turn_ids": torch.tensor([[7, 7]])})
    with pytest.raises(ValueError, match="set max_env_steps to the environment's step budget"):
        E.epo(ctx, **m.hook_hparams({"smooth_from_step": 0}))


def test_turn_ids_reach_the_loss_through_trls_split(tmp_path):
    """A real rollout of the smoke household game through the trainer: the rollout's per-token ``turn_ids`` become
    a (N, T) tensor of TRL's batch dict, follow TRL's shuffle and micro-batch split row for row, and the loss
    hook sees them as ``TokenContext.token_columns`` (one real optimizer step of epo_paper)."""
    from trl.trainer.utils import shuffle_sequence_dict, split_tensor_dict

    from harness.train.hooks import TOKEN_COLUMN_PREFIX

    trainer, logs = _household_trainer(tmp_path, "epo_paper", {"max_env_steps": 12, "smooth_from_step": 1,
                                                               "entropy_coeff": 0.01})
    rows = [trainer.train_dataset[i] for i in range(8)]
    out = trainer._generate_and_score_completions(rows)
    key = TOKEN_COLUMN_PREFIX + "turn_ids"
    turns = out[key]
    assert turns.shape == out["completion_ids"].shape and turns.dtype == torch.long
    for i, r in enumerate(rows):  # TRL merged the rollout's lists into the rows: the tensor holds them, -1 after
        n = len(r["turn_ids"])
        assert turns[i, :n].tolist() == r["turn_ids"] and bool((turns[i, n:] == -1).all())
    assert bool((turns[out["completion_mask"] > 0] >= 0).all())
    first = {tuple(row.tolist()): tuple(t.tolist()) for row, t in zip(out["completion_ids"], turns)}
    for chunk in split_tensor_dict(shuffle_sequence_dict(out), 2):
        for row, t in zip(chunk["completion_ids"], chunk[key]):
            assert first[tuple(row.tolist())] == tuple(t.tolist())
    seen = {}
    fn = trainer.method.fn

    def spy(ctx, **hp):
        seen["turns"] = ctx.token_columns.get("turn_ids")
        return fn(ctx, **hp)

    trainer.method.hooks["loss"] = spy
    try:
        trainer.train()
    finally:
        trainer.method.hooks["loss"] = fn
    assert seen["turns"] is not None and int(seen["turns"].max()) >= 1
    assert E.history(trainer._generator, "paper") is not None
    assert_metrics_contract(logs)
    assert all("epo/step_entropy_var" in r and "epo/gate" in r for r in logs if "loss" in r)


def _household_trainer(tmp_path, method: str, hparams: dict, reward=None, **trl):
    """A tiny pre-trained household policy and a HarnessGRPOTrainer on the episode rollout (2 optimizer steps;
    ``reward``: a TRL reward function instead of the game's)."""
    import yaml

    from conftest import tiny_grpo_trainer
    from harness.config import REPO_ROOT
    from harness.data.household import smoke_task
    from harness.config.tiers import DataSpec
    from harness.train.job import task_hooks
    from harness.train.pretrain import pretrain

    t = yaml.safe_load((REPO_ROOT / "config" / "tiers" / "smoke-agent.yaml").read_text())
    model = {**t["model"], "hidden_size": 32, "intermediate_size": 64, "num_layers": 1, "num_heads": 2}
    data = {**t["data"], "n_train": 40, "n_val": 6}
    pretrain(tmp_path / "base", model, {**t["pretrain"], "steps": 3, "batch_size": 2}, data, log=lambda *_: None)
    train, _ = smoke_task().splits(DataSpec(**data))
    job = {"model": model, "data": data}
    m = get_method(method)
    settings = dict(per_device_train_batch_size=8, num_generations=4, steps_per_generation=2, max_steps=2,
                    max_completion_length=384, learning_rate=1e-3, beta=0.0, loss_type="bnpo", temperature=1.0)
    settings.update(trl)
    trainer, _, logs = tiny_grpo_trainer(tmp_path / "base", tmp_path / "run", m,
                                         reward_funcs=[reward or smoke_task().reward], hparams=hparams, rows=train,
                                         trainer_kwargs=lambda tok: task_hooks(job, tok, train), **settings)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    return trainer, logs


def assert_metrics_contract(logs: list[dict], steps_per_generation: int = 2):
    """Every training step logged the trainer's REQUIRED_METRICS (the generation-only ones on generation steps)."""
    from harness.train.trainer import REQUIRED_METRICS

    rows = [r for r in logs if "loss" in r]
    assert rows
    for k, row in enumerate(rows):
        need = set(REQUIRED_METRICS)
        if k % steps_per_generation:
            need -= {"reward", "reward_std", "completions/mean_length", "completions/clipped_ratio"}
        assert not need - set(row), sorted(need - set(row))
