"""The reward, rollout and data extension points: each test registers a toy method (unique name, removed from the
registry afterwards), trains the tiny smoke model for a step or two, and checks that the trainer calls the hook
with what the registry's docstring promises."""
from __future__ import annotations

import math
import re

import pytest
import torch

from harness.data import smoke
from harness.methods import hapo as hapo_mod
from harness.methods.context import BatchContext, BatchDecision, RewardContext, RolloutContext, TokenContext
from harness.methods.registry import (RegistryError, get_method, register_data, register_loss, register_reward,
                                      register_rollout, unregister)
from conftest import tiny_grpo_trainer

G = 4  # completions per prompt in these runs


@pytest.fixture
def toy_name(request):
    name = "toy_" + re.sub(r"\W", "_", request.node.name)
    yield name
    unregister(name)


def _trainer(tiny_base, tmp_path, method: str, *, reward_funcs=None, phase_fn=None, steps: int = 1, **cfg):
    settings = dict(per_device_train_batch_size=8, num_generations=G, max_completion_length=4, learning_rate=1e-4)
    settings.update(cfg)
    return tiny_grpo_trainer(tiny_base, tmp_path / "trainer", method,
                             reward_funcs=reward_funcs or [smoke.exact_match_reward],
                             trainer_kwargs={"phase_fn": phase_fn}, max_steps=steps, **settings)


def _reference_stats(model, temperature, prompt_ids, completion_ids):
    """Token log-probs and entropies of one completion from a plain forward of the policy (logits / T)."""
    ids = torch.tensor([list(prompt_ids) + list(completion_ids)])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].float() / temperature
    lp = torch.log_softmax(logits[len(prompt_ids) - 1:-1], -1)
    ent = -(lp.exp() * lp).sum(-1)
    return lp.gather(-1, torch.tensor(completion_ids).unsqueeze(-1)).squeeze(-1), ent


def _capture_reward(store: list):
    def completions_seen(completions, completion_ids, prompts, **kw):
        store.append({"completions": list(completions), "completion_ids": [list(c) for c in completion_ids],
                      "prompts": list(prompts)})
        return [0.0] * len(completions)

    return completions_seen


# ---------------------------------------------------------------------------------------------------- reward
def test_reward_hook_sees_entropies_phases_and_answers(tiny_base, tmp_path, toy_name):
    """fn(rctx: RewardContext, **hparams) -> list[float | None], appended to TRL's reward_funcs; needs
    "reward_token_stats" fills entropies/logps; phases from the task's phase_fn; task_reward_weight=0: label-free."""
    calls: list[RewardContext] = []
    checks: list[tuple] = []
    box: dict = {}

    def phase_fn(ids):  # toy task: the last token is the "answer" phase
        return [0] * (len(ids) - 1) + [1]

    @register_reward(toy_name, paper="toy", source="test", needs=("reward_token_stats",), task_reward_weight=0.0)
    def toy_reward(rctx: RewardContext, **_):
        calls.append(rctx)
        tr = box["trainer"]
        for prompt, ids, lp, ent in zip(rctx.prompts, rctx.completion_ids, rctx.logps, rctx.entropies):
            p_ids = box["tok"](prompt, add_special_tokens=False)["input_ids"]
            checks.append((lp, ent) + _reference_stats(tr.model, tr.temperature, p_ids, ids))
        return [float(len(ids)) for ids in rctx.completion_ids]

    trainer, tok, logs = _trainer(tiny_base, tmp_path, toy_name, phase_fn=phase_fn, temperature=0.8)
    box.update(trainer=trainer, tok=tok)
    assert trainer.reward_func_names == ["exact_match_reward", f"{toy_name}_reward"]
    assert trainer.reward_weights.tolist() == [0.0, 1.0]
    trainer.train()

    assert len(calls) == 1
    r = calls[0]
    n = 8
    assert len(r) == len(r.prompts) == len(r.completions) == n and r.group_size == G
    assert all(r.prompts[i] == r.prompts[i - i % G] for i in range(n))          # group order
    answers = {row["prompt"]: row["answer"] for row in smoke.rows(smoke.split_pairs(512, 1234)[0][:64])}
    assert r.answers == [answers[p] for p in r.prompts]
    assert r.completions == tok.batch_decode(r.completion_ids, skip_special_tokens=True)
    assert r.phases == [phase_fn(ids) for ids in r.completion_ids]
    assert r.step == 0 and r.max_steps == 1 and r.training and r.generator is trainer._generator
    assert callable(r.log_metric) and set(r.columns) == set()   # no other dataset column in the smoke task
    for lp, ent, ref_lp, ref_ent in checks:                      # current policy at the run's temperature
        torch.testing.assert_close(ent, ref_ent, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(lp, ref_lp, rtol=1e-4, atol=1e-5)
    row = next(m for m in logs if f"rewards/{toy_name}_reward/mean" in m)
    lengths = [len(ids) for ids in r.completion_ids]
    assert row[f"rewards/{toy_name}_reward/mean"] == pytest.approx(sum(lengths) / n)
    assert row["reward"] == pytest.approx(sum(lengths) / n)          # the task reward has weight 0: only logged
    assert "rewards/exact_match_reward/mean" in row


@pytest.mark.parametrize("steps_per_generation", [2, 1])
def test_reward_token_stats_come_from_trls_old_logprob_pass(tiny_base, tmp_path, toy_name, monkeypatch,
                                                            steps_per_generation):
    """Where TRL's generation computes the old log-probs (generation misaligned with the optimizer steps), a reward's
    token statistics are that pass's: no extra forward, the policy's numbers, never the reference pass's (beta > 0,
    reference perturbed here so that the two differ); otherwise one extra no-grad forward gives the same numbers."""
    from harness.train.rollout import RolloutMixin

    checks, extra = [], []
    box: dict = {}
    orig = RolloutMixin._token_stats
    monkeypatch.setattr(RolloutMixin, "_token_stats", lambda self, *a: extra.append(1) or orig(self, *a))

    @register_reward(toy_name, paper="toy", source="test", needs=("reward_token_stats",), task_reward_weight=0.0)
    def toy_reward(rctx: RewardContext, **_):
        tr = box["trainer"]
        for prompt, ids, lp, ent in zip(rctx.prompts, rctx.completion_ids, rctx.logps, rctx.entropies):
            p_ids = box["tok"](prompt, add_special_tokens=False)["input_ids"]
            checks.append((lp, ent) + _reference_stats(tr.model, tr.temperature, p_ids, ids))
        return [0.0] * len(rctx.completion_ids)

    trainer, tok, _ = _trainer(tiny_base, tmp_path, toy_name, steps=steps_per_generation, temperature=0.8, beta=0.1,
                               steps_per_generation=steps_per_generation)
    with torch.no_grad():
        for q in trainer.ref_model.parameters():
            q.add_(0.05 * torch.randn_like(q))
    box.update(trainer=trainer, tok=tok)
    assert trainer._trl_old_logprob_pass() == (steps_per_generation == 2)
    trainer.train()
    assert len(checks) == 8 * steps_per_generation and len(extra) == (0 if steps_per_generation == 2 else 1)
    for lp, ent, ref_lp, ref_ent in checks:
        torch.testing.assert_close(ent, ref_ent, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(lp, ref_lp, rtol=1e-4, atol=1e-5)


def test_reward_hook_length_must_match(tiny_base, tmp_path, toy_name):
    register_reward(toy_name, paper="toy", source="test")(lambda rctx, **_: [1.0])
    trainer, _, _ = _trainer(tiny_base, tmp_path, toy_name)
    with pytest.raises(ValueError, match="returned 1 values for 8 completions"):
        trainer.train()


# ---------------------------------------------------------------------------------------------------- rollout
class _BanToken:
    """Logits processor that forbids one token and counts its calls."""

    def __init__(self, token_id):
        self.token_id, self.calls = token_id, 0

    def __call__(self, input_ids, scores):
        self.calls += 1
        scores = scores.clone()
        scores[:, self.token_id] = -math.inf
        return scores

    def metrics(self):
        return {"toy/processor_calls": self.calls}


def test_rollout_logits_processors_in_training_rollouts(tiny_base, tmp_path, toy_name):
    """kind="logits_processors": fn(rctx, **hparams) -> processors, before each HF generate of the training
    rollouts; the context carries the run's generator and settings, no generate (it runs inside generation)."""
    seen: list[RolloutContext] = []
    procs: list[_BanToken] = []
    box: dict = {}

    @register_rollout(toy_name, paper="toy", source="test")
    def toy_rollout(rctx: RolloutContext, **_):
        seen.append(rctx)
        procs.append(_BanToken(box["tok"].convert_tokens_to_ids("1")))
        return procs[-1:]

    store: list = []
    trainer, tok, logs = _trainer(tiny_base, tmp_path, toy_name, reward_funcs=[_capture_reward(store)], steps=2,
                                  max_completion_length=6)
    box["tok"] = tok
    trainer.train()
    assert len(seen) == 2 and [c.step for c in seen] == [0, 1]
    c = seen[0]
    assert c.generator is trainer._generator and c.group_size == G and c.training and c.max_steps == 2
    assert c.generate is None and c.temperature == trainer.temperature and c.max_completion_length == 6
    assert c.tokenize(["12+34="]) == [tok("12+34=")["input_ids"]] and c.tokenizer is tok
    assert all(p.calls > 0 for p in procs)
    assert all("1" not in text for batch in store for text in batch["completions"])
    assert any("toy/processor_calls" in row for row in logs)


def test_hapo_rollout_takes_a_context_and_keys_stats_by_its_generator():
    g = torch.Generator().manual_seed(5)
    rctx = RolloutContext(generator=g, step=3, max_steps=10, group_size=G, processing_class=None)
    m = get_method("hapo")
    assert m.rollout_kind == "logits_processors"
    (proc,) = m.hook("rollout")(rctx, **m.resolve())
    assert proc.stats_fn() is None and proc.tau == m.resolve()["temperature_tau"]
    hapo_mod.ROLLOUT_STATS[g] = (0.1, 1.0, 0.5, 0.5)
    assert proc.stats_fn() == (0.1, 1.0, 0.5, 0.5)


def test_rollout_func_multi_turn_with_env_mask(tiny_base, tmp_path, toy_name):
    """kind="rollout_func": fn(prompts, rctx) -> TRL rollout dict. A two-turn episode: the model writes up to 3
    tokens (stopping at "1"), the environment writes "+1=" (env_mask 0), the model writes again. Environment tokens
    leave the loss mask and the length metrics; extra fields and phases reach the reward hook."""
    episodes: list[dict] = []
    masks: list[torch.Tensor] = []
    rewards_seen: list[RewardContext] = []

    @register_rollout(toy_name, paper="toy", source="test", kind="rollout_func")
    def toy_episode(prompts, rctx: RolloutContext, **_):
        assert len(prompts) == 8 and all(prompts[i] == prompts[i - i % G] for i in range(8))
        prompt_ids = rctx.tokenize(prompts)
        env = rctx.tokenizer("+1=", add_special_tokens=False)["input_ids"]
        turn1 = rctx.generate(prompt_ids, max_new_tokens=3, stop_strings=["1"])
        turn2 = rctx.generate([p + t + env for p, t in zip(prompt_ids, turn1)], max_new_tokens=2)
        completion_ids = [t1 + env + t2 for t1, t2 in zip(turn1, turn2)]
        out = {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "logprobs": None,
               "env_mask": [[1] * len(t1) + [0] * len(env) + [1] * len(t2) for t1, t2 in zip(turn1, turn2)],
               "phases": [[0] * (len(t1) + len(env)) + [1] * len(t2) for t1, t2 in zip(turn1, turn2)],
               "n_env_tokens": [len(env)] * len(prompts)}
        episodes.append({**out, "turn1": turn1, "turn2": turn2, "eos": rctx.eos_token_ids})
        return out

    @register_reward(toy_name, paper="toy", source="test")
    def toy_reward(rctx: RewardContext, **_):
        rewards_seen.append(rctx)
        return [float(sum(p)) for p in rctx.phases]

    @register_loss(toy_name, paper="toy", source="test")
    def toy_loss(ctx: TokenContext, **_):
        masks.append(ctx.mask.detach().clone())
        return -ctx.advantages * ctx.ratio, {}

    trainer, tok, logs = _trainer(tiny_base, tmp_path, toy_name)
    trainer.train()
    (ep,) = episodes
    one = tok.convert_tokens_to_ids("1")
    for t1 in ep["turn1"]:   # stopped at the first "1", at EOS, or after 3 tokens
        assert 1 <= len(t1) <= 3 and (one not in t1[:-1])
        assert t1[-1] == one or t1[-1] in ep["eos"] or len(t1) == 3
    assert all(1 <= len(t2) <= 2 for t2 in ep["turn2"])
    (r,) = rewards_seen
    assert r.completion_ids == ep["completion_ids"] and r.phases == ep["phases"]
    assert r.columns["n_env_tokens"] == [3] * 8
    (mask,) = masks            # one micro-batch = the whole (shuffled) generation batch
    model_tokens = sorted(sum(m) for m in ep["env_mask"])
    assert sorted(mask.sum(-1).long().tolist()) == model_tokens
    row = next(m for m in logs if "completions/mean_length" in m)
    assert row["completions/mean_length"] == pytest.approx(sum(model_tokens) / 8)


def test_rollout_func_branches_from_a_token_position(tiny_base, tmp_path, toy_name):
    """A tree rollout: one trunk per prompt, branch before its most uncertain token (token_stats), G - 1 siblings
    continue from there."""
    groups: list[dict] = []
    box: dict = {}

    @register_rollout(toy_name, paper="toy", source="test", kind="rollout_func")
    def toy_tree(prompts, rctx: RolloutContext, **_):
        g = rctx.group_size
        roots = rctx.tokenize(prompts[::g])
        trunks = rctx.generate(roots)
        logps, ents = rctx.token_stats(roots, trunks)
        prompt_ids, completion_ids = [], []
        for root, trunk, lp, ent in zip(roots, trunks, logps, ents):
            ref_lp, ref_ent = _reference_stats(box["trainer"].model, rctx.temperature, root, trunk)
            torch.testing.assert_close(ent, ref_ent, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(lp, ref_lp, rtol=1e-4, atol=1e-5)
            t = int(torch.argmax(ent))
            branches = rctx.generate([root + trunk[:t]] * (g - 1), max_new_tokens=rctx.max_completion_length - t)
            leaves = [trunk] + [trunk[:t] + b for b in branches]
            groups.append({"t": t, "trunk": trunk, "leaves": leaves})
            prompt_ids += [root] * g
            completion_ids += leaves
        return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "logprobs": None}

    store: list = []
    trainer, tok, _ = _trainer(tiny_base, tmp_path, toy_name, reward_funcs=[_capture_reward(store)])
    box["trainer"] = trainer
    trainer.train()
    assert len(groups) == 2
    for grp in groups:
        assert all(leaf[:grp["t"]] == grp["trunk"][:grp["t"]] for leaf in grp["leaves"])
        assert all(len(leaf) <= 4 for leaf in grp["leaves"])
    assert store[0]["completion_ids"] == [leaf for grp in groups for leaf in grp["leaves"]]


def test_rollout_func_output_is_checked(tiny_base, tmp_path, toy_name):
    @register_rollout(toy_name, paper="toy", source="test", kind="rollout_func")
    def bad(prompts, rctx, **_):
        ids = rctx.tokenize(prompts)
        return {"prompt_ids": ids, "completion_ids": [[5, 6]] * len(ids), "logprobs": None,
                "env_mask": [[1]] * len(ids)}

    trainer, _, _ = _trainer(tiny_base, tmp_path, toy_name)
    with pytest.raises(ValueError, match="env_mask needs one value per completion token"):
        trainer.train()


def test_rollout_kind_is_checked(toy_name):
    with pytest.raises(RegistryError, match="unknown rollout kind"):
        register_rollout(toy_name, paper="toy", source="test", kind="beam")


def test_trainer_is_checked_and_dispatches_dpo_methods(toy_name):
    """``trainer=`` says what trains a method's jobs; run_job sends "dpo" methods to harness.train.dpo."""
    from harness.methods.registry import get_method

    with pytest.raises(RegistryError, match="unknown trainer 'ppo'; valid: grpo, dpo"):
        register_rollout(toy_name, paper="toy", source="test", kind="rollout_func", trainer="ppo")
    assert get_method("tool_light").trainer == "dpo" and get_method("grpo").trainer == "grpo"


# ---------------------------------------------------------------------------------------------------- data
def test_data_hook_resamples_drops_and_reweights(tiny_base, tmp_path, toy_name):
    """fn(bctx: BatchContext) -> BatchDecision, stage "prompts" (replace the prompts) then "scored" (drop group 0,
    weight group 1 by 2): the loss (TRL's, for a data-only method) gets the dropped rows masked, the weighted
    advantages scaled and a token normaliser that counts the kept tokens only."""
    stages: list[BatchContext] = []

    @register_data(toy_name, paper="toy", source="test")
    def toy_data(bctx: BatchContext, **_):
        stages.append(bctx)
        if bctx.stage == "prompts":
            picks = torch.randint(len(bctx.dataset), (len(bctx.rows),), generator=bctx.generator).tolist()
            return BatchDecision(rows=[bctx.dataset[i] for i in picks], metrics={"toy/n_groups": len(picks)})
        n = bctx.rewards.numel()
        keep = torch.ones(n, dtype=torch.bool)
        keep[:G] = False
        w = torch.ones(n)
        w[G:2 * G] = 2.0
        return BatchDecision(keep=keep, weights=w)

    def dense(completions, answer, **kw):  # rewards that vary within groups, so advantages are not all 0
        return [float(len(c)) + (c.strip() == a) for c, a in zip(completions, answer)]

    store: list = []
    trainer, tok, logs = _trainer(tiny_base, tmp_path, toy_name, reward_funcs=[dense, _capture_reward(store)],
                                  per_device_train_batch_size=12)
    seen: list[dict] = []
    inner = trainer._compute_loss

    def spy(model, inputs):
        seen.append({k: v.detach().clone() for k, v in inputs.items() if torch.is_tensor(v)})
        return inner(model, inputs)

    trainer._compute_loss = spy
    trainer.train()

    pre, post = stages
    assert pre.stage == "prompts" and len(pre.rows) == 3 and pre.group_size == G and pre.rewards is None
    assert len(pre.dataset) == 64 and pre.generator is trainer._generator
    g = torch.Generator().manual_seed(0)
    picks = torch.randint(64, (3,), generator=g).tolist()
    expected = [pre.dataset[i]["prompt"] for i in picks for _ in range(G)]
    assert store[0]["prompts"] == expected                      # the re-sampled prompts were generated
    assert post.stage == "scored" and post.rewards.shape == (12,) and post.advantages.shape == (12,)
    assert post.mask.shape == post.completion_ids.shape and post.mask.size(0) == 12
    assert [r["prompt"] for r in post.rows] == expected
    rows_tokens = post.mask.sum(-1)
    (inputs,) = seen             # one micro-batch = the whole (shuffled) generation batch
    mask = inputs["completion_mask"] * inputs["tool_mask"]
    exp_tokens = sorted(int(t) if i >= G else 0 for i, t in enumerate(rows_tokens.tolist()))
    assert sorted(mask.sum(-1).long().tolist()) == exp_tokens
    exp_adv = sorted(round(float(a) * (2.0 if G <= i < 2 * G else 1.0), 5)
                     for i, a in enumerate(post.advantages) if i >= G)
    assert sorted(round(float(a), 5) for a, m in zip(inputs["advantages"], mask) if m.sum() > 0) == exp_adv
    assert any(a != 0 for a in exp_adv)
    assert int(inputs["num_items_in_batch"]) == int(rows_tokens[G:].sum())
    row = next(m for m in logs if "data/kept_frac" in m)
    assert row["data/kept_frac"] == pytest.approx(8 / 12) and row["toy/n_groups"] == 3
    touched = float(rows_tokens[:2 * G].sum() / rows_tokens.sum())
    assert row["method/frac_tokens_touched"] == pytest.approx(touched)


def test_data_hook_rows_must_match_groups(tiny_base, tmp_path, toy_name):
    register_data(toy_name, paper="toy", source="test")(
        lambda bctx, **_: BatchDecision(rows=bctx.rows[:1]) if bctx.stage == "prompts" else None)
    trainer, _, _ = _trainer(tiny_base, tmp_path, toy_name)
    with pytest.raises(ValueError, match="returned 1 rows for 2 groups"):
        trainer.train()
