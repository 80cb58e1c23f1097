"""Multi-turn episodes that branch (issue 14: ARPO, AEPO): each GRPO group of ``G`` entries is a tree of episodes of
one game whose ``G`` leaves fill the group, grown by a method's :class:`TreeScheduler`.

**What a branch is.** Every turn, each live episode of a group samples one model turn (one batched HF ``generate``
over all live episodes, as :func:`harness.evaluate.episodes.run_episodes`), the environment steps, the reply is
appended; then the scheduler may *branch* live episodes: a branch copies the episode so far (model turns and
replies) and continues from the same game state with its own samples. The state is cloned by ``reset(game_id)``
plus replaying the episode's actions, so **only deterministic environments can be branched**: every replayed step
is compared with the step the source saw (observation, admissible actions, won, done, valid, step count) and a
difference is an error naming the game and step (the smoke household game and ALFWorld are deterministic: a game is
a pure function of its id). The scheduler may also start new root episodes of a group (a fresh ``reset``).

**TRL's contract is kept.** One completion per generation-batch entry: a group's leaves, in creation order, fill its
``G`` consecutive entries (the scheduler must create exactly ``G`` nodes per group; more or fewer is an error). A
leaf's completion is its whole path (the copied prefix included), laid out as run_episodes lays out an episode
(``env_mask`` 0 on the environment's tokens); a copied prefix keeps its ``env_mask`` 1, so a prefix shared by
``n`` leaves is trained in each of them with each leaf's advantage (ARPO's "soft" advantage attribution; ETTRL
instead masks shared prefixes). Extra columns: ``tree_parent`` (the leaf a branch was copied from, index in its
group, -1 for a root) and ``tree_branch_turn`` (model turns on the copied prefix, 0 for a root).

**What it saves** (``tree/*`` metrics, per leaf): model tokens sampled (``tokens_generated``; a prefix is sampled
once) against flat sampling of the same leaves (``tokens_flat_equiv``: the sum of the leaves' path model tokens;
each leaf is a policy sample, so this is flat sampling's expected cost), their ratio ``token_ratio``; the same for
environment steps taken by the policy (ARPO's "tool calls": ``env_steps``, ``env_steps_flat_equiv``,
``env_step_ratio``) and the steps spent replaying clones (``replay_steps``, the price of cloning without
snapshots); roots and branches per group; ``rounds`` (generate calls: a tree plays longer than one episode);
``branch_concentration`` (per group with branches, the share of its branches in the lineage of its most-branched
root) and ``consecutive_branch_frac`` (branch events whose path also branched after the previous turn: AEPO's
"consecutive high-entropy branching"). HF ``generate`` re-encodes every context each turn, flat or tree.

**Scheduler contract** (:class:`TreeScheduler`, duck-typed: methods may not import this package). ``top_k`` and
``window``: for the first ``window`` tokens of every model turn the player records the ``top_k`` largest sampling
log-probabilities plus the sampled token's when it is not among them (what vLLM returns with ``logprobs=k``), in
``Node.turn_logps``; sampling log-probabilities are the processed scores (temperature and the run's filters), which
equal vLLM's raw ones at temperature 1 without filters. ``start(n_groups, size, vocab_size) -> roots per group``;
after every turn ``grow(live, groups)``: ``live`` are the episodes still playing, in play order (the
episodes of the previous turn that continue, then the nodes created after it, in creation order), ``groups[g]`` all
nodes of group g in creation order; it returns (branch sources, new roots' groups). Branches are created first, in
the order given, then roots.
"""
from __future__ import annotations

import copy
import functools
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence, runtime_checkable

import torch

from harness.envs.agent import COMPACT, Template
from harness.envs.base import TextEnv
from harness.envs.workers import make_envs
from harness.evaluate.episodes import Episode, EpisodeBatch, TurnRules, check_counts, run_episodes, seeded


@dataclass(eq=False)
class Node:
    """One episode of a tree as a scheduler sees it. ``index``: creation order in its group (= its leaf position);
    ``parent``: index of the node it was branched from (-1: a root); ``root``: index of its lineage's root;
    ``prefix_turns``: model turns on the prefix it copied (0 for a root; ``path_turns`` adds its own);
    ``turn_logps``: per own turn, per recorded token, the recorded log-probabilities (module docstring);
    ``branch_turns``: path turn indices after which this path was branched; ``tag``: the scheduler's own notes."""
    group: int
    index: int
    parent: int = -1
    root: int = 0
    prefix_turns: int = 0
    turn_logps: list = field(default_factory=list)
    branch_turns: set = field(default_factory=set)
    tag: dict = field(default_factory=dict)

    @property
    def own_turns(self) -> int:
        return len(self.turn_logps)

    @property
    def path_turns(self) -> int:
        return self.prefix_turns + self.own_turns


@runtime_checkable
class TreeScheduler(Protocol):
    """How a method grows each group's tree (module docstring). ``grow`` returns (branch sources, one entry per
    branch, a source may repeat; a group index per new root episode)."""
    top_k: int
    window: int

    def start(self, n_groups: int, size: int, vocab_size: int) -> list[int]: ...

    def grow(self, live: list[Node], groups: list[list[Node]]) -> tuple[list[Node], list[int]]: ...


class Forest:
    """The trees' bookkeeping, apart from models and environments (the golden test drives it with scripted turns):
    root creation, the play order, applying the scheduler's growth within each group's cap of ``size`` nodes."""

    def __init__(self, n_groups: int, size: int, scheduler, vocab_size: int):
        self.size, self.scheduler = size, scheduler
        self.groups: list[list[Node]] = [[] for _ in range(n_groups)]
        self.consecutive = 0  # branch events whose path also branched after the previous turn
        roots = list(scheduler.start(n_groups, size, vocab_size))
        if len(roots) != n_groups or any(not isinstance(r, int) or not 1 <= r <= size for r in roots):
            raise ValueError(f"scheduler.start must give 1..{size} roots for each of {n_groups} groups, got {roots}")
        self.live: list[Node] = [self._new(g) for g in range(n_groups) for _ in range(roots[g])]

    def _new(self, group: int, source: Node | None = None) -> Node:
        nodes = self.groups[group]
        if len(nodes) >= self.size:
            raise ValueError(f"the scheduler grew group {group} past its {self.size} episodes")
        i = len(nodes)
        node = Node(group, i, root=i) if source is None else Node(
            group, i, parent=source.index, root=source.root, prefix_turns=source.path_turns,
            branch_turns=set(source.branch_turns))
        nodes.append(node)
        return node

    def advance(self, still: list[Node]) -> list[Node]:
        """After a turn (each live node's turn recorded, ``path_turns`` counted): ``still`` are the nodes that
        continue; returns the new nodes (branches first, then roots), which join the play order after ``still``."""
        branches, roots = self.scheduler.grow(list(still), [list(g) for g in self.groups])
        ids = {id(n) for n in still}
        new = []
        for src in branches:
            if id(src) not in ids:
                raise ValueError("the scheduler branched an episode that is not playing")
            t = src.path_turns - 1  # the branch copies the path after its turn t
            self.consecutive += (t - 1) in src.branch_turns
            src.branch_turns.add(t)
            new.append(self._new(src.group, src))
        new += [self._new(g) for g in roots]
        self.live = list(still) + new
        return new

    def check_full(self) -> None:
        short = [(g, len(n)) for g, n in enumerate(self.groups) if len(n) != self.size]
        if short:
            raise ValueError(f"the scheduler left groups with fewer than {self.size} episodes: {short[:5]}")


def window_entries(lsm: torch.Tensor, sampled: torch.Tensor, k: int) -> list[list[float]]:
    """Per row of ``lsm`` (rows, V) log-probabilities: the ``k`` largest, plus the sampled token's when it is not
    among them (vLLM's ``logprobs=k``)."""
    vals, idx = lsm.topk(min(k, lsm.size(-1)), dim=-1)
    out = []
    for row, (v, i, s) in enumerate(zip(vals.tolist(), idx, sampled.tolist())):
        out.append(v if s in i.tolist() else v + [float(lsm[row, s])])
    return out


def _same(a, b) -> bool:
    sa, sb = a.step, b.step
    return (sa.observation, sa.admissible, sa.won, sa.done, sa.valid, sa.steps, a.task) == (
        sb.observation, sb.admissible, sb.won, sb.done, sb.valid, sb.steps, b.task)


@dataclass
class TreeBatch(EpisodeBatch):
    """The leaves (group order) as an :class:`EpisodeBatch`, plus the tree columns and counts."""
    tree: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)

    def rollout(self) -> dict[str, list]:
        return {**super().rollout(), **{k: list(v) for k, v in self.tree.items()}}

    def metrics(self, prefix: str = "episodes") -> dict[str, float]:
        c, n = self.counts, max(len(self.episodes), 1)
        flat_tok = sum(sum(e.env_mask) for e in self.episodes)
        flat_steps = sum(e.turns for e in self.episodes)
        out = {f"tree/{k}": c[k] / n for k in ("tokens_generated", "env_steps", "replay_steps")}
        out.update({"tree/tokens_flat_equiv": flat_tok / n, "tree/env_steps_flat_equiv": flat_steps / n,
                    "tree/token_ratio": c["tokens_generated"] / max(flat_tok, 1),
                    "tree/env_step_ratio": c["env_steps"] / max(flat_steps, 1),
                    "tree/roots_per_group": c["roots"] / c["groups"], "tree/branches_per_group":
                    c["branches"] / c["groups"], "tree/rounds": c["rounds"],
                    "tree/consecutive_branch_frac": c["consecutive"] / max(c["branches"], 1)})
        if c["concentration"]:
            out["tree/branch_concentration"] = sum(c["concentration"]) / len(c["concentration"])
        return {**super().metrics(prefix), **out}


def run_branching(model, tok, env_factory: Callable[[], TextEnv], game_ids: Sequence[str], *, group_size: int,
                  scheduler, max_turns: int, max_new_tokens_per_turn: int, temperature: float = 1.0,
                  invalid_penalty: float = 0.0, seed: int | None = None, template: Template | str = COMPACT,
                  max_episode_tokens: int | None = None, generation_kwargs: dict | None = None,
                  workers: int = 0) -> TreeBatch:
    """Play one tree of ``group_size`` leaves per game of ``game_ids`` (call under ``torch.no_grad``). Settings as
    :func:`~harness.evaluate.episodes.run_episodes` (``num_generations`` is ``group_size``); ``scheduler``: a
    :class:`TreeScheduler`."""
    check_counts(group_size=group_size, max_turns=max_turns, max_new_tokens_per_turn=max_new_tokens_per_turn)
    if not isinstance(scheduler, TreeScheduler):
        raise TypeError(f"scheduler {type(scheduler).__name__} is not a TreeScheduler (top_k, window, start, grow)")
    rules = TurnRules.make(tok, template=template, temperature=temperature, max_turns=max_turns,
                           max_new_tokens_per_turn=max_new_tokens_per_turn, max_episode_tokens=max_episode_tokens,
                           invalid_penalty=invalid_penalty, generation_kwargs=generation_kwargs)
    counts = dict.fromkeys(("tokens_generated", "env_steps", "replay_steps", "roots", "branches", "rounds"), 0)
    timing = {"reset_s": 0.0, "env_s": 0.0, "generate_s": 0.0, "generate_calls": 0}
    envs = make_envs(env_factory, workers)
    state: dict[int, tuple[Episode, int, list]] = {}  # id(node) -> (episode, env index, seen path)
    n_envs = [0]

    def open_envs(nodes: list[Node], sources: list[Node | None]) -> None:
        """Reset an environment per new node; a branch's is replayed to its source's state, step by step checked."""
        t0 = time.perf_counter()
        gids = [game_ids[n.group] for n in nodes]
        seen, first, clones = envs.reset(gids), n_envs[0], []
        n_envs[0] += len(nodes)
        for j, (node, src, s) in enumerate(zip(nodes, sources, seen)):
            if src is None:
                ep, path = rules.start(gids[j], s), [s]
            else:
                ep, path = copy.deepcopy(state[id(src)][0]), list(state[id(src)][2])
                if not _same(s, path[0]):
                    raise ValueError(f"cannot branch game {gids[j]}: reset gave a different first state than the "
                                     "episode's (the environment is not deterministic)")
                clones.append((first + j, node))
            state[id(node)] = (ep, first + j, path)
        for r in range(max((len(state[id(n)][0].actions) for _, n in clones), default=0)):
            acts = {e: state[id(n)][0].actions[r] for e, n in clones if len(state[id(n)][0].actions) > r}
            got = envs.step({e: a if a is not None else "" for e, a in acts.items()})
            counts["replay_steps"] += len(acts)
            for e, n in clones:
                want = state[id(n)][2][r + 1] if e in got else None
                if want is not None and not _same(got[e], want):
                    raise ValueError(f"cannot branch game {game_ids[n.group]}: replaying its actions gave a "
                                     f"different state at step {r + 1} ({got[e].step.observation[:60]!r} vs "
                                     f"{want.step.observation[:60]!r}): the environment is not deterministic, so "
                                     "an episode cannot be cloned by reset + replay")
        timing["reset_s"] += time.perf_counter() - t0

    try:
        with seeded(seed):
            forest = Forest(len(game_ids), group_size, scheduler, len(tok.get_vocab()))
            open_envs(forest.live, [None] * len(forest.live))
            counts["roots"] += len(forest.live)
            rules.check_room(ep for ep, _, _ in state.values())
            limit = group_size * max_turns + 1
            while forest.live:
                if counts["rounds"] >= limit:
                    raise RuntimeError(f"the trees did not finish in {limit} turns (scheduler keeps adding episodes)")
                live = forest.live
                record = functools.partial(window_entries, k=scheduler.top_k)
                turns, actions, seen = rules.play_turn(model, envs, [state[id(n)][0] for n in live],
                                                       [state[id(n)][1] for n in live], timing,
                                                       window=scheduler.window, record=record)
                counts["rounds"] += 1
                still = []
                for node, (ids, lps, rec), action in zip(live, turns, actions):
                    ep, e, path = state[id(node)]
                    node.turn_logps.append(rec)
                    path.append(seen[e])
                    counts["tokens_generated"] += len(ids)
                    counts["env_steps"] += 1
                    if rules.advance(ep, ids, lps, action, seen[e]):
                        still.append(node)
                new = forest.advance(still)
                if new:
                    open_envs(new, [None if n.parent < 0 else forest.groups[n.group][n.parent] for n in new])
                    counts["branches"] += sum(n.parent >= 0 for n in new)
                    counts["roots"] += sum(n.parent < 0 for n in new)
            forest.check_full()
    finally:
        envs.close()
    leaves = [n for g in forest.groups for n in g]
    episodes = [state[id(n)][0] for n in leaves]
    for ep in episodes:  # closed and scored as run_episodes closes and scores an episode
        rules.finish(ep)
    conc = []
    for g in forest.groups:
        per_root = [sum(n.root == r.index and n.parent >= 0 for n in g) for r in g if r.parent < 0]
        if sum(per_root):
            conc.append(max(per_root) / sum(per_root))
    counts.update(groups=max(len(game_ids), 1), consecutive=forest.consecutive, concentration=conc)
    tree = {"tree_parent": [n.parent for n in leaves], "tree_branch_turn": [n.prefix_turns for n in leaves]}
    return TreeBatch(episodes, {k: round(v, 3) if isinstance(v, float) else v for k, v in timing.items()},
                     tree=tree, counts=counts)


def probe_first_turns(model, tok, env_factory: Callable[[], TextEnv], game_ids: Sequence[str], *, top_k: int,
                      window: int, max_new_tokens: int, temperature: float = 1.0, template: Template | str = COMPACT,
                      generation_kwargs: dict | None = None, workers: int = 0) -> list[list[list[float]]]:
    """One first turn per game, sampled from its prompt (up to ``max_new_tokens``, the template's stops) and never
    stepped: per game, the recorded log-probabilities of the turn's first ``window`` tokens (the ``top_k`` largest,
    plus the sampled token's when outside them), as :func:`run_branching` records a turn. AEPO's ``H_root`` probe."""
    from harness.evaluate.turn_sampling import sample_turn

    check_counts(top_k=top_k, window=window, max_new_tokens=max_new_tokens)
    rules = TurnRules.make(tok, template=template, temperature=temperature, max_turns=1,
                           max_new_tokens_per_turn=max_new_tokens, max_episode_tokens=None, invalid_penalty=0.0,
                           generation_kwargs=generation_kwargs)
    envs = make_envs(env_factory, workers)
    try:
        starts = [rules.start(g, s) for g, s in zip(game_ids, envs.reset(list(game_ids)))]
    finally:
        envs.close()
    turns = sample_turn(model, tok, [ep.prompt_ids for ep in starts], rules.gen, rules.text_stops, window=window,
                        record=functools.partial(window_entries, k=top_k))
    return [rec for _, _, rec in turns]


@dataclass(frozen=True)
class EpisodeSettings:
    """How a task plays its training episodes (:class:`harness.envs.agent.EpisodeSpec` bound to the training games;
    built by ``harness.train.job.task_hooks``): the environment factory, template and budgets."""
    env_factory: Callable[[], TextEnv]
    template: Template | str
    max_turns: int
    max_new_tokens_per_turn: int
    max_episode_tokens: int | None
    invalid_penalty: float
    workers: int = 0


@dataclass
class EpisodePlayer:
    """What a method's ``rollout_func`` hook gets as ``episodes=`` when the task plays episodes: the task's
    :class:`EpisodeSettings` bound to the policy being trained (``model`` unwrapped for generation, called under
    ``torch.no_grad``) and the run's sampling settings. ``play(prompts, scheduler)`` returns TRL's rollout dict."""
    model: object
    tok: object
    settings: EpisodeSettings
    group_size: int
    temperature: float = 1.0
    generation_kwargs: dict | None = None
    log_metric: Callable[[str, float], None] | None = None

    def play(self, prompts: list, scheduler=None, *, metric_prefix: str = "episodes") -> dict:
        """One episode per entry (``scheduler`` None: flat, as the task's own rollout), or one tree per group of
        ``group_size`` consecutive entries (the same game id) grown by ``scheduler``."""
        bad = [p for p in prompts if not isinstance(p, str)]
        if bad:
            raise TypeError(f"agent rollouts take game ids as prompts (str), got {type(bad[0]).__name__}")
        s, g, kw = self.settings, self.group_size, self._kw()
        if scheduler is None:
            batch = run_episodes(self.model, self.tok, s.env_factory, list(prompts), num_generations=1, **kw)
        else:
            heads = list(prompts[::g])
            if len(prompts) % g or any(prompts[i] != heads[i // g] for i in range(len(prompts))):
                raise ValueError(f"branching needs whole groups of {g} identical game ids, got {list(prompts)[:2 * g]}")
            batch = run_branching(self.model, self.tok, s.env_factory, heads, group_size=g, scheduler=scheduler, **kw)
        if self.log_metric is not None:
            for name, value in batch.metrics(metric_prefix).items():
                self.log_metric(name, value)
        return batch.rollout()

    def _kw(self) -> dict:
        s = self.settings
        return dict(max_turns=s.max_turns, max_new_tokens_per_turn=s.max_new_tokens_per_turn,
                    temperature=self.temperature, invalid_penalty=s.invalid_penalty, template=s.template,
                    max_episode_tokens=s.max_episode_tokens, generation_kwargs=self.generation_kwargs,
                    workers=s.workers)

    def monitor(self, game_ids: list[str], scheduler) -> TreeBatch:
        """One episode per game, played as a tree of one leaf (``scheduler`` records its turns' log-probabilities):
        a pre-monitoring pass whose episodes are not trained (AEPO's dynamic split)."""
        return run_branching(self.model, self.tok, self.settings.env_factory, list(game_ids), group_size=1,
                             scheduler=scheduler, **self._kw())

    def probe(self, game_ids: list[str], *, top_k: int, window: int, max_new_tokens: int) -> list:
        """:func:`probe_first_turns` of ``game_ids`` with the run's template and sampling settings."""
        kw = self._kw()
        return probe_first_turns(self.model, self.tok, self.settings.env_factory, list(game_ids), top_k=top_k,
                                 window=window, max_new_tokens=max_new_tokens, temperature=self.temperature,
                                 template=kw["template"], generation_kwargs=self.generation_kwargs,
                                 workers=kw["workers"])
