"""The one interface every text environment serves, for training and evaluation alike.

An episode is ``reset(game_id)`` then ``step(action)`` until ``done``; both return a :class:`Step`. Game ids come
from the environment's own ordered list (``game_ids()``: a manifest, never the file system's order), so the same id
gives the same game on every machine and every member of a GRPO group starts from the same state.

An action the game does not know is never an exception: it is a step with ``valid=False`` (the observation says so,
the state is unchanged), so the rollout can count and penalise it. Exceptions are for bad configuration only (an
unknown game id, a missing or altered game file), and they name the valid choices or the file.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

#: ALFWorld's six task types, in the order verl-agent and the papers report them (shared/notes/agents.md)
TASK_TYPES: tuple[str, ...] = (
    "pick_and_place", "pick_two_obj_and_place", "look_at_obj_in_light",
    "pick_heat_then_place_in_recep", "pick_cool_then_place_in_recep", "pick_clean_then_place_in_recep",
)
#: the step budget of an ALFWorld episode (verl-agent ``max_steps``)
MAX_STEPS = 50


@dataclass(frozen=True)
class Step:
    """What the agent sees after ``reset`` or ``step``.

    ``observation``: the game's text (after ``reset``: the room description and the task);
    ``admissible``: the actions the game accepts now (sorted, for a stable prompt);
    ``won``: the task is solved; ``done``: the episode is over (won, or the step budget is spent);
    ``valid``: the last action was one the game knows (always True after ``reset``);
    ``steps``: actions taken so far, invalid ones included; ``info``: environment-specific extras; an environment
    that scores episodes itself puts its score of the episode so far in ``info["reward"]`` (the rollout's episode
    reward is the last one given, :func:`harness.envs.agent.episode_reward`)."""
    observation: str
    admissible: tuple[str, ...]
    won: bool = False
    done: bool = False
    valid: bool = True
    steps: int = 0
    info: dict = field(default_factory=dict)


@runtime_checkable
class TextEnv(Protocol):
    """A text game: ALFWorld (:mod:`harness.envs.alfworld`) and the smoke household (:mod:`harness.envs.household`)."""

    #: the task description of the current game (e.g. "put a clean mug in coffeemachine")
    task: str
    #: the current game's task type, one of :data:`TASK_TYPES`
    task_type: str

    def game_ids(self) -> list[str]:
        """Every game this environment can reset to, in manifest order."""
        ...

    def reset(self, game_id: str) -> Step:
        """Start ``game_id`` (unknown id: ``KeyError`` naming the first valid ones)."""
        ...

    def step(self, action: str) -> Step:
        """Take one action; unknown actions give ``valid=False``, never an exception."""
        ...

    def close(self) -> None:
        ...
