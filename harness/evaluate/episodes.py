"""Multi-turn text-game episodes (:class:`harness.envs.base.TextEnv`) played by a model: the GRPO rollout
(:func:`harness.train.episodes.make_rollout_func`) and the agent evaluation (:mod:`harness.evaluate.agent`) both
play through :func:`run_episodes`; the branching player (:mod:`harness.evaluate.branching`) plays its turns by the
same :class:`TurnRules`.

**Design: one completion per episode.** The model's turns and the environment's replies are concatenated into one
completion after the first prompt (``prompt_ids``: the first observation; ``completion_ids``: model turn 1, reply 1,
model turn 2, ...) with ``env_mask`` 0 on every token the environment wrote, so TRL trains only the model's tokens,
as TRL's own tool loop does. verl-agent instead makes one sample per step (the last ``history_length`` observation/
action pairs in a fresh prompt). That does not fit TRL 1.16's ``rollout_func`` contract, which scores, groups and
normalises exactly one completion per generation-batch entry (each prompt arrives ``num_generations`` times in a row),
while per-step samples would make the count vary with episode length; and it costs the 2-core smoke budget more (a
T-step episode becomes T training sequences, each re-encoding a prompt; here it is one sequence). The price: every
turn conditions on the whole episode (``history_length`` cannot shorten that without the sampled and the trained
log-probs disagreeing, so only None is accepted) and long episodes make long sequences (``max_episode_tokens``
caps them; real ALFWorld, ~300-token admissible lists over 50 steps, exceeds an 8k context, where verl-agent's
per-step layout would not).

**A turn.** One HF ``generate`` call over all live episodes (left-padded, the run's sampling settings), stopped at
the template's stop strings (``</action>``; each one token: extra EOS ids; else a text stopping criterion), EOS or
``max_new_tokens_per_turn`` (a ``continue_cut`` template's turn cut there is sampled on until it stops or the
episode's budget is spent: :meth:`TurnRules.sample`). (The template carries the turn format: stops, parser, inline
replies, system prompt; :class:`harness.envs.agent.Template`. What follows is the ``<action>`` games' format; a
tool-call template reads the whole turn and lets the environment parse the call and score the final answer,
``Step.info["reward"]``.)
The action is the first ``<action>...</action>`` of the turn's text, stripped (verl-agent's ``alfworld_projection``,
which also demands ``<think>`` tags; we do not). **A turn without it is invalid**: counted (``invalid_actions``),
penalised by :func:`episode_reward`, and the environment still steps, with the empty action, which the game answers
``Nothing happens.`` and which spends a step of its budget (verl-agent steps with the text's tail, rejected the same
way). A tagged action the game does not know is counted (``unknown_actions``), not penalised, as in verl-agent. The
reply (a :class:`Template`, inside the chat template's turn markers when the tokenizer has one) gets ``env_mask`` 0.
An episode ends when the game says ``done`` (won or its own budget spent), after ``max_turns`` turns, or when one
more reply and turn would not fit in ``max_episode_tokens`` (prompt + completion); the last observation is not
appended (no turn reads it), an EOS is (``env_mask`` 0), so TRL sees a finished completion.

**Environments** step between generate calls, all live episodes as one batch: in this process (``workers=0``) or in
``workers`` processes (:mod:`harness.envs.workers`; ALFWorld's PDDL engine is slow), with identical episodes.
"""
from __future__ import annotations

import copy
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence

import torch
from transformers import GenerationConfig

from harness.envs.agent import COMPACT, TEMPLATES, Template, episode_reward
from harness.envs.base import TextEnv
from harness.envs.workers import make_envs
from harness.evaluate.turn_sampling import SampledTurn, generation_config, sample_turn, stopped, turn_length

log = logging.getLogger(__name__)


@dataclass
class Episode:
    """One played episode. ``completion_ids``/``env_mask``/``logprobs``/``turn_ids`` have one entry per completion
    token: ``env_mask`` 1 on model tokens and 0 on environment tokens; ``logprobs`` the sampling log-probability of
    model tokens (after temperature and the run's filters) and 0.0 on environment tokens; ``turn_ids`` the model turn
    a token belongs to (its reply included). ``actions``: the parsed action per turn (None: no tags)."""
    game_id: str
    task_type: str
    prompt_ids: list[int]
    completion_ids: list[int] = field(default_factory=list)
    env_mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    turn_ids: list[int] = field(default_factory=list)
    actions: list[str | None] = field(default_factory=list)
    won: bool = False
    done: bool = False
    steps: int = 0
    invalid_actions: int = 0
    unknown_actions: int = 0
    reward: float = 0.0
    #: the environment's own score of the episode (``Step.info["reward"]``, last given), when it gives one
    env_reward: float | None = None

    @property
    def turns(self) -> int:
        return len(self.actions)

    @property
    def truncated(self) -> bool:
        """Ended by ``max_turns`` or ``max_episode_tokens`` before the game said done."""
        return not self.done

    def add(self, ids: Sequence[int], logprobs: Sequence[float] | None, *, model: bool) -> None:
        self.completion_ids += list(ids)
        self.env_mask += [int(model)] * len(ids)
        self.logprobs += list(logprobs) if logprobs is not None else [0.0] * len(ids)
        self.turn_ids += [max(self.turns - 1, 0)] * len(ids)


@dataclass
class EpisodeBatch:
    """Episodes in group order (each game ``num_generations`` times consecutively); ``timing``: seconds spent
    resetting the environments (``reset_s``), stepping them (``env_s``) and generating (``generate_s``), and the
    number of ``generate`` calls."""
    episodes: list[Episode]
    timing: dict = field(default_factory=dict)

    def rollout(self) -> dict[str, list]:
        """What TRL's ``rollout_func`` returns: ``prompt_ids``, ``completion_ids``, ``logprobs``, ``env_mask`` and,
        for the reward functions, ``episode_reward``, ``won``, ``steps``, ``turns``, ``invalid_actions``,
        ``unknown_actions``, ``truncated``, ``task_type``, ``game_id``, ``turn_ids`` (one per completion)."""
        eps = self.episodes
        cols = ("prompt_ids", "completion_ids", "logprobs", "env_mask", "turn_ids", "won", "steps", "turns",
                "invalid_actions", "unknown_actions", "truncated", "task_type", "game_id")
        out = {c: [copy.copy(getattr(e, c)) for e in eps] for c in cols}
        out["episode_reward"] = [e.reward for e in eps]
        return out

    def metrics(self, prefix: str = "episodes") -> dict[str, float]:
        """Batch means: success rate (overall and per task type present), invalid and unknown actions, turns, model
        and environment tokens per episode, share truncated."""
        eps = self.episodes
        mean = lambda xs: sum(xs) / max(len(xs), 1)  # noqa: E731
        out = {f"{prefix}/{k}": mean([f(e) for e in eps]) for k, f in (
            ("success_rate", lambda e: e.won), ("invalid_per_episode", lambda e: e.invalid_actions),
            ("unknown_per_episode", lambda e: e.unknown_actions), ("turns", lambda e: e.turns),
            ("model_tokens", lambda e: sum(e.env_mask)), ("env_tokens", lambda e: len(e.env_mask) - sum(e.env_mask)),
            ("truncated_frac", lambda e: e.truncated))}
        for t in sorted({e.task_type for e in eps}):
            out[f"{prefix}/success/{t}"] = mean([e.won for e in eps if e.task_type == t])
        return out


class _Formatter:
    """Prompt and reply token ids: plain text, or the tokenizer's chat template when it has one (the reply is the
    template's text between an assistant message and the next generation prompt: end-of-turn, user header, content,
    assistant header; an inline reply is the plain text, continuing the model's message). ``system``: a system
    message before the first prompt (plain text: prepended to it)."""
    SENTINEL = "\x00SENTINEL\x00"

    def __init__(self, tok, system: str | None = None):
        self.tok, self.chat, self.system = tok, getattr(tok, "chat_template", None) is not None, system

    def first(self, text: str) -> list[int]:
        if not self.chat:
            text = text if self.system is None else f"{self.system}\n\n{text}"
            return list(self.tok(text, add_special_tokens=True)["input_ids"])
        msgs = ([] if self.system is None else [{"role": "system", "content": self.system}]) + [
            {"role": "user", "content": text}]
        s = self.tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        return list(self.tok(s, add_special_tokens=False)["input_ids"])

    def inline(self, text: str) -> list[int]:
        return list(self.tok(text, add_special_tokens=False)["input_ids"])

    def reply(self, text: str) -> list[int]:
        if self.chat:
            msgs = [{"role": "user", "content": "x"}, {"role": "assistant", "content": self.SENTINEL},
                    {"role": "user", "content": text}]
            s = self.tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
            text = s[s.index(self.SENTINEL) + len(self.SENTINEL):]
        return list(self.tok(text, add_special_tokens=False)["input_ids"])


def check_counts(**settings: int) -> None:
    """The players' shared argument check: each named setting is an integer >= 1."""
    for name, v in settings.items():
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")


@contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """An int ``seed`` samples reproducibly from a forked RNG (the global one is untouched); None samples from the
    global RNG (a trainer seeds it)."""
    devices = [torch.cuda.current_device()] if seed is not None and torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices, enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        yield


def resolve_template(template: Template | str) -> Template:
    """A :class:`Template`, or the one :data:`~harness.envs.agent.TEMPLATES` names."""
    if isinstance(template, Template):
        return template
    if template not in TEMPLATES:
        raise ValueError(f"unknown template {template!r}; valid: {', '.join(TEMPLATES)} (or a Template)")
    return TEMPLATES[template]


@dataclass(frozen=True)
class TurnRules:
    """How every turn of a run is sampled, answered and budgeted (module docstring, "A turn"): the one home of
    these rules for the flat player (:func:`run_episodes`) and the branching one
    (:func:`harness.evaluate.branching.run_branching`), so both lay out an episode identically. Build with
    :meth:`make`."""
    tok: object
    template: Template
    gen: GenerationConfig
    #: the template's stops that are one token each (extra EOS ids) and, when any is not, all of them as text
    stop_ids: tuple[int, ...]
    text_stops: tuple[str, ...]
    fmt: _Formatter
    max_turns: int
    max_episode_tokens: int | None
    invalid_penalty: float

    @classmethod
    def make(cls, tok, *, template: Template | str, temperature: float, max_turns: int,
             max_new_tokens_per_turn: int, max_episode_tokens: int | None, invalid_penalty: float,
             generation_kwargs: dict | None) -> TurnRules:
        """The rules for a run's settings (as :func:`run_episodes` takes them)."""
        if tok.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token (set tok.pad_token) for batched generation")
        template = resolve_template(template)
        if template.continue_cut and max_episode_tokens is None:
            raise ValueError("the template continues cut turns (continue_cut) until the episode's budget is spent: "
                             "set max_episode_tokens")
        stops = [tok(x, add_special_tokens=False)["input_ids"] for x in template.stops]
        single = all(len(x) == 1 for x in stops)
        stop_ids = tuple(x[0] for x in stops) if single else ()
        gen = generation_config(tok, temperature, max_new_tokens_per_turn, generation_kwargs, stop_ids)
        return cls(tok, template, gen, stop_ids, () if single else template.stops, _Formatter(tok, template.system),
                   max_turns, max_episode_tokens, invalid_penalty)

    @property
    def room(self) -> int:
        """What one more turn needs: its tokens and the closing EOS (a ``continue_cut`` turn: one token and the EOS;
        it is cut where the budget ends, :meth:`sample`)."""
        return 2 if self.template.continue_cut else self.gen.max_new_tokens + 1

    @property
    def budget(self) -> float:
        return self.max_episode_tokens if self.max_episode_tokens is not None else float("inf")

    def start(self, game_id: str, seen) -> Episode:
        """A new episode of ``game_id`` from the environment's first state (its rendered observation: the prompt)."""
        return Episode(game_id, seen.task_type, self.fmt.first(self.template.render(seen.step, seen.task, first=True)))

    def check_room(self, episodes: Iterable[Episode]) -> None:
        """Refuse a budget that leaves a new episode no room for one turn."""
        for ep in episodes:
            if len(ep.prompt_ids) + self.room > self.budget:
                raise ValueError(f"max_episode_tokens {self.max_episode_tokens} leaves no room for one turn of "
                                 f"{ep.game_id} (prompt {len(ep.prompt_ids)} tokens + {self.room})")

    def play_turn(self, model, envs, episodes: Sequence[Episode], env_ids: Sequence[int], timing: dict, *,
                  window: int = 0, record: Callable[[torch.Tensor, torch.Tensor], list] | None = None
                  ) -> tuple[list[SampledTurn], list[str | None], dict]:
        """One turn of ``episodes`` (episode j plays in environment ``env_ids[j]``): one :func:`sample_turn` over
        their contexts (``window``, ``record``: as there), their actions parsed, the environments stepped (an
        untagged turn steps with ""); the seconds and the call are added to ``timing``. Returns the sampled turns,
        the actions and the environments' new states by environment index."""
        t0 = time.perf_counter()
        turns = self.sample(model, [ep.prompt_ids + ep.completion_ids for ep in episodes], timing, window=window,
                            record=record)
        t1 = time.perf_counter()
        actions = [self.template.parse(self.tok.decode(ids, skip_special_tokens=True)) for ids, _, _ in turns]
        seen = envs.step({e: a if a is not None else "" for e, a in zip(env_ids, actions)})
        timing["generate_s"] += t1 - t0
        timing["env_s"] += time.perf_counter() - t1
        return turns, actions, seen

    def sample(self, model, contexts: list[list[int]], timing: dict, *, window: int = 0,
               record: Callable[[torch.Tensor, torch.Tensor], list] | None = None) -> list[SampledTurn]:
        """The model's turn after each context: one :func:`sample_turn` call. A ``continue_cut`` template's rows
        that the per-turn cap cut are sampled on (their context plus the turn so far, a call per round, fewer rows
        each time) until they stop; each call's cap is the per-turn one or the largest budget left, and every row
        is cut where only the closing EOS still fits (ARPO's rollout: a segment ends at a tool's closing tag or EOS,
        or runs to the end of the response budget and is truncated there). A stop string split across two calls is
        found in the joined turn; ``record`` sees the turn's first ``window`` tokens, over as many calls as they
        take. Counts the ``generate`` calls in ``timing``."""
        if not self.template.continue_cut:
            timing["generate_calls"] += 1
            return sample_turn(model, self.tok, contexts, self.gen, self.text_stops, window=window, record=record)
        ends = set(self.gen.eos_token_id)
        left = [int(self.budget) - len(c) - 1 for c in contexts]  # what each row may still write; the EOS stays
        rows: list[SampledTurn] = [([], [], []) for _ in contexts]
        active, written = list(range(len(contexts))), 0  # rows still writing have all written every call's cap
        while active:
            gen = copy.copy(self.gen)
            gen.max_new_tokens = min(self.gen.max_new_tokens, max(left[j] - written for j in active))
            more = max(window - written, 0)
            got = sample_turn(model, self.tok, [contexts[j] + rows[j][0] for j in active], gen, self.text_stops,
                              window=more, record=record if more else None)
            timing["generate_calls"] += 1
            for j, (ids, lps, rec) in zip(active, got):
                ids, lps = rows[j][0] + ids, rows[j][1] + lps
                n = min(turn_length(ids, ends, self.tok, self.text_stops), left[j])
                rows[j] = (ids[:n], lps[:n], (rows[j][2] + rec)[:n])
            written += gen.max_new_tokens
            active = [j for j in active
                      if len(rows[j][0]) < left[j] and not stopped(rows[j][0], ends, self.tok, self.text_stops)]
        return rows

    def advance(self, ep: Episode, ids: list[int], logprobs: list[float], action: str | None, seen) -> bool:
        """Advance ``ep`` by one turn: record the model's turn (``ids``, ``logprobs``, the parsed ``action``) and
        the environment's answer ``seen``; True (the reply appended) when the episode plays on: not done, under
        ``max_turns``, and one more reply and turn fit in ``max_episode_tokens``."""
        step = seen.step
        ep.actions.append(action)
        ep.add(ids, logprobs, model=True)
        ep.invalid_actions += action is None
        ep.unknown_actions += action is not None and not step.valid
        ep.won, ep.done, ep.steps = step.won, step.done, step.steps
        if "reward" in step.info:
            ep.env_reward = float(step.info["reward"])
        if step.done or ep.turns >= self.max_turns:
            return False
        text = self.template.render(step, seen.task, first=False)
        reply = self.fmt.inline(text) if self.template.inline else self.fmt.reply(text)
        closed = ids and reply and reply[0] == ids[-1] == self.tok.eos_token_id
        if self.fmt.chat and not self.template.inline and closed:
            reply = reply[1:]  # the model closed its turn itself: no second end-of-turn token
        if len(ep.prompt_ids) + len(ep.completion_ids) + len(reply) + self.room > self.budget:
            return False  # the next turn would not fit: the episode ends here (truncated)
        ep.add(reply, None, model=False)
        return True

    def finish(self, ep: Episode) -> None:
        """Close a played episode with an EOS (a finished completion for TRL, not "clipped"; never trained on) and
        give it its reward (:func:`episode_reward`)."""
        eos = self.tok.eos_token_id
        if eos is not None and (not ep.completion_ids or ep.completion_ids[-1] != eos):
            ep.add([eos], None, model=False)
        ep.reward = episode_reward(ep.won, ep.invalid_actions, self.invalid_penalty, ep.env_reward)


def run_episodes(model, tok, env_factory: Callable[[], TextEnv], game_ids: Sequence[str], *, num_generations: int,
                 max_turns: int, max_new_tokens_per_turn: int, temperature: float = 1.0,
                 history_length: int | None = None, invalid_penalty: float = 0.0, seed: int | None = None,
                 template: Template | str = COMPACT, max_episode_tokens: int | None = None,
                 generation_kwargs: dict | None = None, workers: int = 0) -> EpisodeBatch:
    """Play ``num_generations`` episodes of every game in ``game_ids`` (group order: a game's episodes are
    consecutive and all start from that game), one ``generate`` call per turn over the live episodes.

    ``model``: a causal LM with HF ``generate`` (call under ``torch.no_grad``); ``tok``: its tokenizer (with a pad
    token). ``env_factory()``: a new :class:`TextEnv`, one per episode, closed at the end. ``temperature`` 0: greedy.
    ``history_length``: None only (module docstring). ``invalid_penalty``: see :func:`episode_reward`. ``seed``: an
    int samples reproducibly from a forked RNG (the global one is untouched); None samples from the global RNG (a
    trainer seeds it). ``template``: a :class:`Template` or a name in :data:`harness.envs.agent.TEMPLATES`.
    ``max_episode_tokens``: cap on prompt + completion (None: none). ``generation_kwargs``: more
    ``GenerationConfig`` fields (``top_p``, ``eos_token_id``, ...). ``workers``: 0 steps the environments in this
    process, N > 0 in N worker processes (:mod:`harness.envs.workers`; the same episodes either way). The batch's
    ``timing`` holds the seconds spent resetting, stepping and generating."""
    if history_length is not None:
        raise ValueError("history_length must be None: one completion per episode conditions every turn on the whole "
                         "episode; a shorter generation context would make the sampled and the trained log-probs "
                         "disagree (see harness.evaluate.episodes)")
    check_counts(num_generations=num_generations, max_turns=max_turns, max_new_tokens_per_turn=max_new_tokens_per_turn)
    rules = TurnRules.make(tok, template=template, temperature=temperature, max_turns=max_turns,
                           max_new_tokens_per_turn=max_new_tokens_per_turn, max_episode_tokens=max_episode_tokens,
                           invalid_penalty=invalid_penalty, generation_kwargs=generation_kwargs)
    timing = {"reset_s": 0.0, "env_s": 0.0, "generate_s": 0.0, "generate_calls": 0}
    envs = make_envs(env_factory, workers)
    try:
        with seeded(seed):
            ids = [gid for gid in game_ids for _ in range(num_generations)]
            t0 = time.perf_counter()
            seen = envs.reset(ids)
            timing["reset_s"] = time.perf_counter() - t0
            log.info("reset %d episodes of %d games in %.1f s (workers=%d)", len(ids), len(game_ids),
                     timing["reset_s"], workers)
            episodes = [rules.start(gid, s) for gid, s in zip(ids, seen)]
            _play(rules, model, envs, episodes, timing)
    finally:
        envs.close()
    for ep in episodes:
        rules.finish(ep)
    return EpisodeBatch(episodes, {k: round(v, 3) if isinstance(v, float) else v for k, v in timing.items()})


def _play(rules: TurnRules, model, envs, episodes: list[Episode], timing: dict) -> None:
    """Turns over all live episodes (episode i plays in environment i) until each has ended."""
    rules.check_room(episodes)
    live = list(range(len(episodes)))
    for turn in range(rules.max_turns):
        if not live:
            break
        g0, e0 = timing["generate_s"], timing["env_s"]
        turns, actions, seen = rules.play_turn(model, envs, [episodes[i] for i in live], live, timing)
        log.info("turn %d: %d live episodes, generate %.1f s, environments %.1f s", turn + 1, len(live),
                 timing["generate_s"] - g0, timing["env_s"] - e0)
        live = [i for i, (ids, lps, _), action in zip(live, turns, actions)
                if rules.advance(episodes[i], ids, lps, action, seen[i])]
