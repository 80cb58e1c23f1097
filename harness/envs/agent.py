"""What an agent reads and writes in a text game (torch-free, shared by the training rollout
:mod:`harness.evaluate.episodes` and the agent evaluation): prompt templates, action parsing, the episode reward."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from harness.envs.base import Step
from harness.envs.household import tokenize

TAGS = ("<think>", "</think>", "<action>", "</action>")
STOP = "</action>"
ACTION = re.compile(r"<action>(.*?)</action>", re.S)
WIN_REWARD = 10.0  # verl-agent: reward 10 * won


def parse_action(text: str) -> str | None:
    """The first ``<action>...</action>`` of ``text``, stripped; None when there is none (an invalid turn)."""
    m = ACTION.search(text)
    return m.group(1).strip() if m else None


def whole_turn(text: str) -> str:
    """The turn's text as it is: for environments that read the call themselves (tool-call turns, whose final answer
    is a turn without a call)."""
    return text


#: turn parsers by name (:attr:`Template.parser`)
PARSERS: dict[str, Callable[[str], str | None]] = {"action": parse_action, "whole_turn": whole_turn}


@dataclass(frozen=True)
class Template:
    """How the environment speaks to the agent and how a model turn ends and is read.

    ``first``: the first prompt; ``turn``: each reply after an action. Fields: ``{observation}``, ``{admissible}``
    (the admissible actions joined by ", "), ``{step}`` (steps taken), ``{task}``. With a chat template each
    rendering is the content of a user message, unless ``inline``.

    The turn format (defaults: the ``<action>`` games'): ``stops``, the strings that end a model turn besides EOS;
    ``parser``, a name in :data:`PARSERS`: what the environment receives from a turn's text (None: an invalid turn,
    counted and penalised); ``inline``: the replies continue the model's own message as plain text (tool results
    appended where the call stopped, as ARPO's rollout does) instead of a new user message; ``system``: a system
    message before the first prompt (chat templates; plain text: prepended); ``continue_cut``: a turn cut by
    ``max_new_tokens_per_turn`` is not read yet but continued by the next ``generate`` call (the environment not
    stepped) until it stops or the episode's ``max_episode_tokens`` is spent, where it is cut and read: the per-turn
    cap is then only a chunk size (ARPO's rollout: a segment's ``max_tokens`` is the remaining response budget;
    :meth:`harness.evaluate.episodes.TurnRules.sample`)."""
    first: str
    turn: str
    stops: tuple[str, ...] = (STOP,)
    parser: str = "action"
    inline: bool = False
    system: str | None = None
    continue_cut: bool = False

    def __post_init__(self):
        if self.parser not in PARSERS:
            raise ValueError(f"unknown turn parser {self.parser!r}; valid: {', '.join(PARSERS)}")
        if not self.stops or not all(isinstance(x, str) and x for x in self.stops):
            raise ValueError(f"a template needs at least one non-empty stop string, got {self.stops!r}")

    def parse(self, text: str) -> str | None:
        """The action a model turn's ``text`` takes (None: none; an invalid turn)."""
        return PARSERS[self.parser](text)

    def format_fields(self) -> dict:
        """The turn-format fields that differ from the defaults (what a protocol records beside the texts, so the
        protocols of the ``<action>`` templates are what they were before the fields existed)."""
        out = {}
        for f in ("stops", "parser", "inline", "system", "continue_cut"):
            v, d = getattr(self, f), Template.__dataclass_fields__[f].default
            if v != d:
                out[f] = list(v) if isinstance(v, tuple) else v
        return out

    def render(self, step: Step, task: str, *, first: bool) -> str:
        fmt = self.first if first else self.turn
        return fmt.format(observation=step.observation, admissible=", ".join(step.admissible), step=step.steps,
                          task=task)

    def words(self) -> list[str]:
        """The multi-character tokens of the template's own text plus :data:`TAGS`: what a word-level tokenizer
        (``harness.data.wordlevel``) must list as words, besides the environment's vocabulary."""
        text = re.sub(r"\{\w+\}", " ", self.first + self.turn)
        return sorted({w for w in tokenize(text) if len(w) > 1} | set(TAGS))


#: the verl-agent prompt shape (task and observation, admissible actions, think/action instruction; our wording)
VERL_AGENT = Template(
    first="You are an expert agent in a household. {observation}\nYour admissible actions are: [{admissible}].\n"
          "Reason step by step inside <think> </think>, then give one admissible action inside <action> </action>.\n",
    turn="\nStep {step}. Observation: {observation}\nYour admissible actions are: [{admissible}].\n")
#: a short shape for tiny word-level models (smoke tier): observation and admissible actions only
COMPACT = Template(first="{observation}\nactions: {admissible}\n", turn="\n{observation}\nactions: {admissible}\n")
#: the shortest shape: the observation only (the policy must name actions from what it has read); the smoke
#: household task's template (harness.data.household), where admissible lists would triple the episode length
OBSERVATION = Template(first="{observation}\n", turn="\n{observation}\n")
def _arpo_tools() -> Template:
    from harness.envs.toolqa import RESULT_FORMAT, STOP_STRINGS, SYSTEM_PROMPT

    return Template(first="{observation}", turn=RESULT_FORMAT.replace("{output}", "{observation}"),
                    stops=STOP_STRINGS, parser="whole_turn", inline=True, system=SYSTEM_PROMPT, continue_cut=True)


#: ARPO's tool-integrated reasoning turns (the ``arpo_tools`` task, :mod:`harness.data.arpo_task`): the rows' system
#: prompt, the question as the user message, a turn stops at ``</python>``/``</search>``, the tool's output continues
#: the model's message as `` <result>\n...\n</result>`` (RUC-NLPIR/ARPO vllm_rollout_with_tools.py), the
#: environment reads the whole turn; a segment runs until it stops or the response budget is spent (continue_cut)
ARPO_TOOLS = _arpo_tools()
TEMPLATES = {"verl_agent": VERL_AGENT, "compact": COMPACT, "observation": OBSERVATION, "arpo_tools": ARPO_TOOLS}


def check_turn_settings(d, *, parser: str, refusal: str) -> None:
    """A game task's data block (a :class:`harness.config.tiers.DataSpec`): a known template that reads turns with
    ``parser`` (``refusal``: what is wrong with another one, after the template's name), and ``max_turns`` and
    ``max_new_tokens_per_turn`` >= 1, and a ``max_episode_tokens`` where the template continues cut turns; a
    ConfigError naming the field."""
    from harness.config import ConfigError

    if d.template not in TEMPLATES:
        raise ConfigError(f"data.template: unknown template {d.template!r}; valid: {', '.join(TEMPLATES)}")
    if TEMPLATES[d.template].parser != parser:
        raise ConfigError(f"data.template: {d.template!r} {refusal}")
    if TEMPLATES[d.template].continue_cut and d.max_episode_tokens is None:
        raise ConfigError(f"data.max_episode_tokens: template {d.template!r} continues a turn cut by "
                          "max_new_tokens_per_turn until the episode's budget is spent: set the budget")
    for name in ("max_turns", "max_new_tokens_per_turn"):
        if getattr(d, name) < 1:
            raise ConfigError(f"data.{name} must be >= 1, got {getattr(d, name)}")


def action_text(action: str) -> str:
    """A model turn that takes ``action``: what :func:`parse_action` reads back (the expert's turns in pre-training)."""
    return f"<action> {action} </action>"


@dataclass(frozen=True)
class EpisodeSpec:
    """How a task plays episodes, for training rollouts and the held-out evaluation alike. ``env(split, game_ids)``
    builds a :class:`~harness.envs.base.TextEnv` of that split that knows at least ``game_ids``; ``template`` names one
    of :data:`TEMPLATES`; the budgets are :func:`harness.evaluate.episodes.run_episodes`' (``max_turns`` model turns,
    ``max_new_tokens_per_turn``, ``max_episode_tokens`` prompt + completion); ``invalid_penalty`` per untagged turn
    (:func:`episode_reward`); ``train_split``/``heldout_split`` name the splits (every reported number names it)."""
    env: Callable
    template: str
    max_turns: int
    max_new_tokens_per_turn: int
    max_episode_tokens: int | None
    invalid_penalty: float
    train_split: str
    heldout_split: str
    #: what the episode reward is, in words, for an environment that scores episodes itself (None: verl-agent's)
    reward: str | None = None

    def protocol(self, split: str, game_ids: list[str]) -> dict:
        """What fixes an episode's outcome besides the policy: the environment's protocol, template and budgets."""
        env = self.env(split, game_ids)
        try:
            envp = env.protocol()
        finally:
            env.close()
        t = TEMPLATES[self.template]
        return {"env": envp, "template": self.template, "template_text": [t.first, t.turn], **t.format_fields(),
                "max_turns": self.max_turns, "max_new_tokens_per_turn": self.max_new_tokens_per_turn,
                "max_episode_tokens": self.max_episode_tokens, "invalid_penalty": self.invalid_penalty,
                "reward": self.reward or f"{WIN_REWARD:g} * won - invalid_penalty * invalid_turns"}


def episode_reward(won: bool, invalid_actions: int, penalty: float, env_reward: float | None = None) -> float:
    """verl-agent's episode reward: ``10 * won - penalty * invalid_actions`` (penalty 0.1 when enabled there); an
    environment that scores its episodes itself (``Step.info["reward"]`` on the last step, e.g. ARPO's answer F1)
    gives ``env_reward``, which replaces ``10 * won``."""
    base = WIN_REWARD * float(bool(won)) if env_reward is None else float(env_reward)
    return base - float(penalty) * int(invalid_actions)


def agent_reward(completions: list, episode_reward: list[float], **kwargs) -> list[float]:
    """TRL reward function: the rollout's ``episode_reward`` column (:func:`episode_reward` with the rollout's
    ``invalid_penalty``), one value per completion."""
    return [float(r) for r in episode_reward]
