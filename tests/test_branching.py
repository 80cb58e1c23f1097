"""Branching episodes (harness/evaluate/branching.py): every leaf is laid out like a played episode (replayed on a
fresh game: the environment's tokens are exactly its replies), a branch's prefix is its source's, a group's leaves
fill its G entries in creation order, the token and step accounting against flat sampling, determinism checks
(a non-deterministic game is refused), scheduler errors, seeded reproducibility, the EpisodePlayer's TRL contract,
and the trainer's pass-through (a rollout_func hook with ``episodes=`` next to the household task's rollout)."""
from __future__ import annotations

import math
import random
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from harness.data.household import GAME, build_tokenizer  # noqa: E402
from harness.envs.agent import OBSERVATION, parse_action  # noqa: E402
from harness.envs.household import HouseholdEnv  # noqa: E402
from harness.evaluate.branching import EpisodePlayer, EpisodeSettings, run_branching  # noqa: E402

N_GAMES, MAX_TURNS = 6, 5


def factory():
    return HouseholdEnv("train", N_GAMES, max_steps=MAX_TURNS, **GAME)


GAMES = factory().game_ids()


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


class Actor:
    """A fake policy: each row writes ``<action> X </action>``, X drawn with torch's global RNG from actions the
    games know (and some they do not); scores: logit 4 on the written token, N(0, 1) elsewhere."""
    device = torch.device("cpu")

    def __init__(self, tok):
        env, acts = factory(), {"look", "inventory", "go to cabinet 9"}
        for g in GAMES:
            acts |= {a for a in env.reset(g).admissible if a.startswith(("go to", "open"))}
        self.tok, self.rows = tok, [tok(f"<action> {a} </action>", add_special_tokens=False)["input_ids"]
                                    for a in sorted(acts)]

    def generate(self, input_ids, attention_mask, generation_config, **kw):
        rows = [self.rows[int(torch.randint(len(self.rows), ()))][:generation_config.max_new_tokens]
                for _ in range(len(input_ids))]
        width, pad = max(map(len, rows)), self.tok.pad_token_id
        new = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
        scores = tuple(torch.randn(len(rows), len(self.tok)).scatter(1, new[:, t:t + 1], 4.0) for t in range(width))
        return SimpleNamespace(sequences=torch.cat([input_ids, new], 1), scores=scores)


class Greedy:
    """A test scheduler: ``roots`` roots per group; after every turn each live episode branches once while its
    group has room (or, ``rng`` given, with probability 1/2 from that python RNG)."""
    top_k, window = 3, 4

    def __init__(self, roots=2, rng=None, extra=0, stop_early=False):
        self.roots, self.rng, self.extra, self.stop_early, self.seen = roots, rng, extra, stop_early, []

    def start(self, n_groups, size, vocab_size):
        self.size, self.vocab = size, vocab_size
        return [self.roots] * n_groups

    def grow(self, live, groups):
        self.seen.append([n.own_turns for n in live])
        count = [len(g) for g in groups]
        branches = []
        for n in live:
            if count[n.group] < self.size + self.extra and (self.rng is None or self.rng.random() < 0.5):
                branches.append(n)
                count[n.group] += 1
        playing = {n.group for n in live}
        roots = [] if self.stop_early else [g for g in range(len(groups)) if g not in playing and count[g] < self.size]
        return branches, roots


def play(tok, scheduler, games=GAMES[:3], g=4, seed=0, **kw):
    with torch.no_grad():
        return run_branching(Actor(tok), tok, factory, games, group_size=g, scheduler=scheduler,
                             max_turns=MAX_TURNS, max_new_tokens_per_turn=12, template=OBSERVATION, seed=seed,
                             invalid_penalty=0.1, **kw)


def replay_layout(ep, tok):
    """Replay the leaf's actions on a fresh game: prompt, per turn model tokens then exactly the game's reply (env_mask
    0, logprob 0), a final EOS; outcome fields as the game says."""
    env = factory()
    step = env.reset(ep.game_id)
    assert ep.prompt_ids == tok(OBSERVATION.render(step, env.task, first=True))["input_ids"]
    n = len(ep.completion_ids)
    assert len(ep.env_mask) == len(ep.logprobs) == len(ep.turn_ids) == n
    for k, action in enumerate(ep.actions):
        idx = [i for i in range(n) if ep.turn_ids[i] == k]
        mask = [ep.env_mask[i] for i in idx]
        m = mask.index(0) if 0 in mask else len(mask)
        assert m > 0 and mask == [1] * m + [0] * (len(mask) - m)
        assert parse_action(tok.decode([ep.completion_ids[i] for i in idx[:m]], skip_special_tokens=True)) == action
        step = env.step(action if action is not None else "")
        env_ids = [ep.completion_ids[i] for i in idx[m:]]
        if k < ep.turns - 1:
            assert env_ids == tok(OBSERVATION.render(step, env.task, first=False), add_special_tokens=False)[
                "input_ids"]
        else:
            assert env_ids == [tok.eos_token_id]
    assert (ep.won, ep.done, ep.steps) == (step.won, step.done, step.steps)
    assert ep.reward == pytest.approx(10.0 * ep.won - 0.1 * ep.invalid_actions)


def test_leaves_fill_groups_and_replay_exactly(tok):
    batch = play(tok, Greedy(roots=2))
    eps, tree = batch.episodes, batch.tree
    assert len(eps) == 3 * 4 and [e.game_id for e in eps] == [g for g in GAMES[:3] for _ in range(4)]
    for ep in eps:
        replay_layout(ep, tok)
    for k in range(3):
        group = eps[4 * k:4 * k + 4]
        parents, turns = tree["tree_parent"][4 * k:4 * k + 4], tree["tree_branch_turn"][4 * k:4 * k + 4]
        assert parents[:2] == [-1, -1] and turns[:2] == [0, 0] and all(p >= 0 for p in parents[2:])
        for ep, p, t in zip(group, parents, turns):
            if p >= 0:  # the branch's first t turns are its source's, token for token (replies included)
                src = group[p]
                cut = ep.turn_ids.index(t) if t < ep.turns else len(ep.turn_ids)
                assert ep.completion_ids[:cut] == src.completion_ids[:cut] and ep.actions[:t] == src.actions[:t]
                assert ep.env_mask[:cut] == src.env_mask[:cut]  # a copied prefix stays trained (ARPO)
    out = batch.rollout()
    assert len(out["completion_ids"]) == 12 and out["tree_parent"] == tree["tree_parent"]


def test_accounting_against_flat_sampling(tok):
    batch = play(tok, Greedy(roots=1))
    c, eps = batch.counts, batch.episodes
    own = sum(sum(e.env_mask) for e in eps)  # path model tokens of the leaves (flat sampling's cost)
    assert c["tokens_generated"] < own  # prefixes are sampled once
    assert c["env_steps"] < sum(e.turns for e in eps)
    assert c["replay_steps"] == sum(batch.tree["tree_branch_turn"])  # each clone replays its prefix
    assert c["roots"] + c["branches"] == len(eps) and c["roots"] == 3
    m = batch.metrics()
    assert m["tree/token_ratio"] == pytest.approx(c["tokens_generated"] / own)
    assert m["tree/tokens_flat_equiv"] == pytest.approx(own / len(eps)) and m["tree/env_step_ratio"] < 1
    assert m["tree/branches_per_group"] == 3 and m["tree/roots_per_group"] == 1
    assert m["tree/branch_concentration"] == 1.0  # one root: every branch is in its lineage
    assert 0 <= m["tree/consecutive_branch_frac"] <= 1 and "episodes/success_rate" in m


def test_recorded_logprobs_and_flat_equivalence(tok):
    """A scheduler that never branches (G roots) plays what flat sampling plays: token ratio 1, no replay."""
    s = Greedy(roots=4, rng=random.Random(0))
    s.grow = lambda live, groups: ([], [])
    batch = play(tok, s)
    assert batch.counts["tokens_generated"] == sum(sum(e.env_mask) for e in batch.episodes)
    assert batch.counts["replay_steps"] == 0 and batch.metrics()["tree/token_ratio"] == 1.0


def test_scheduler_sees_recorded_window(tok):
    seen = []

    class Spy(Greedy):
        def grow(self, live, groups):
            for n in live:
                rec = n.turn_logps[-1]
                seen.append(rec)
                assert 1 <= len(rec) <= self.window and all(3 <= len(r) <= 4 for r in rec)
                assert all(x <= 0 for r in rec for x in r)
            return super().grow(live, groups)

    play(tok, Spy(roots=2))
    assert seen


def test_seeded_runs_repeat(tok):
    a = play(tok, Greedy(roots=2, rng=random.Random(1)), seed=3)
    b = play(tok, Greedy(roots=2, rng=random.Random(1)), seed=3)
    assert [e.completion_ids for e in a.episodes] == [e.completion_ids for e in b.episodes]
    assert a.tree == b.tree


def test_scheduler_errors(tok):
    with pytest.raises(ValueError, match="past its 4 episodes"):
        play(tok, Greedy(roots=2, extra=1))
    with pytest.raises(ValueError, match="fewer than 4 episodes"):
        play(tok, Greedy(roots=1, stop_early=True, rng=random.Random(0)))
    with pytest.raises(ValueError, match="roots"):
        play(tok, Greedy(roots=5))
    with pytest.raises(TypeError, match="TreeScheduler"):
        play(tok, object())


class Drifting(HouseholdEnv):
    """Not deterministic: every reset of a game after the first says something else."""
    resets = 0

    def reset(self, game_id):
        step = super().reset(game_id)
        Drifting.resets += 1
        return step if Drifting.resets <= 3 else type(step)(step.observation + " x", step.admissible)


def test_non_deterministic_environments_are_refused(tok):
    with torch.no_grad(), pytest.raises(ValueError, match="not deterministic"):
        run_branching(Actor(tok), tok, lambda: Drifting("train", N_GAMES, max_steps=MAX_TURNS, **GAME), GAMES[:1],
                      group_size=4, scheduler=Greedy(roots=3), max_turns=MAX_TURNS, max_new_tokens_per_turn=12,
                      template=OBSERVATION, seed=0)


def test_player_contract_flat_and_tree(tok):
    logged = {}
    settings = EpisodeSettings(factory, OBSERVATION, MAX_TURNS, 12, 384, 0.1)
    player = EpisodePlayer(Actor(tok), tok, settings, group_size=4, log_metric=logged.__setitem__)
    prompts = [g for g in GAMES[:2] for _ in range(4)]
    with torch.no_grad():
        tree = player.play(prompts, Greedy(roots=2))
        assert len(tree["completion_ids"]) == 8 and {"tree_parent", "env_mask", "turn_ids"} <= set(tree)
        assert "tree/token_ratio" in logged and "episodes/success_rate" in logged
        flat = player.play(prompts)
        assert len(flat["completion_ids"]) == 8 and "tree_parent" not in flat
        with pytest.raises(ValueError, match="whole groups"):
            player.play(prompts[:3] + prompts[4:], Greedy())
        with pytest.raises(TypeError, match="game ids"):
            player.play([[1, 2]] * 4, Greedy())


def test_workers_play_the_same_trees(tok):
    a = play(tok, Greedy(roots=2, rng=random.Random(2)), games=GAMES[:2], seed=5)
    b = play(tok, Greedy(roots=2, rng=random.Random(2)), games=GAMES[:2], seed=5, workers=2)
    assert [e.completion_ids for e in a.episodes] == [e.completion_ids for e in b.episodes]
    assert a.counts["replay_steps"] == b.counts["replay_steps"] > 0


def test_trainer_passes_episodes_to_a_branching_method(tmp_path):
    """A tiny household job of ``arpo`` through harness.train.job (task_hooks -> trainer -> hook with episodes=):
    one GRPO step over trees of G = 4 leaves (2 roots), tree and ARPO metrics logged, model tokens counted as the
    completion length; a rollout_func hook without ``episodes`` is still refused next to the episode rollout."""
    import yaml

    from harness.config import REPO_ROOT
    from harness.methods.registry import get_method
    from harness.train.job import run_job
    from harness.train.pretrain import pretrain
    from harness.train.trainer import HarnessGRPOTrainer

    t = yaml.safe_load((REPO_ROOT / "config" / "tiers" / "smoke-agent.yaml").read_text())
    model = {**t["model"], "hidden_size": 32, "intermediate_size": 64, "num_layers": 1, "num_heads": 2}
    pre = {**t["pretrain"], "steps": 3, "batch_size": 2}
    data = {**t["data"], "n_train": 20, "n_val": 6}
    pretrain(tmp_path / "base", model, pre, data, log=lambda *_: None)
    job = {"tier": "smoke-agent", "method": "arpo", "seed": 1, "hparams": {"initial_rollouts": 2}, "model": model,
           "data": data, "pretrain": pre, "eval": {**t["eval"], "n_val": 6, "every_steps": 1}, "job_key": "test",
           "trl": {**t["trl"], "max_steps": 1, "per_device_train_batch_size": 8, "num_generations": 4,
                   "steps_per_generation": 1}}
    r = run_job(job, model_dir=tmp_path / "base", out_dir=tmp_path / "job", data_dir=tmp_path, mlflow_uri=None,
                save_model=False)
    m = r["metrics"][0]
    assert m["tree/roots_per_group"] >= 2 and m["tree/token_ratio"] <= 1.0
    assert {"arpo/entropy_first_turn", "arpo/branch_rate", "episodes/success_rate"} <= set(m)
    assert m["completions/mean_length"] == pytest.approx(m["episodes/model_tokens"])
    assert all(math.isfinite(m[k]) for k in ("loss", "entropy", "tree/tokens_generated"))
    with pytest.raises(ValueError, match="multi-turn episode rollout"):
        HarnessGRPOTrainer(model=None, reward_funcs=[lambda **k: []], args=None, method=get_method("ettrl"),
                           rollout_func=lambda prompts, trainer: {}, episodes=object())
