"""The smoke household: a procedurally generated ALFWorld look-alike that a tiny model can learn in minutes.

It serves :class:`harness.envs.base.TextEnv` like the real ALFWorld wrapper, so every agent method runs at smoke tier
on two CPU cores. It keeps ALFWorld's six task types, its goal conditions (read from the ALFWorld 0.4 game files'
PDDL goals), its action grammar in the **0.4.x** form (``move X to Y``; 0.3.x said ``put X in/on Y``) and its
feedback sentences (``alfred.twl2``), in one small room (a kitchen, bedroom or bathroom) with few receptacles and
objects. It is *not* ALFWorld: no scenes from ALFRED, any object fits in any receptacle, every receptacle is its own
location, and there is no ``help`` command or welcome banner. Smoke claims only; the card says so.

A game is a pure function of ``(base_seed, split, index)`` and the difficulty knobs: ``household-<split>-<index>``
hashes (sha256, not Python's salted ``hash``) to the generator's seed, and task types go round-robin over the index,
so a split of ``6k`` games holds ``k`` of each type. :func:`expert_plan` is a breadth-first search (shortest
walkthrough); :func:`vocabulary` lists every token an observation, task or admissible action can contain.
"""
from __future__ import annotations

import hashlib
import random
import re
from collections import deque
from dataclasses import dataclass, replace

from harness.envs.base import MAX_STEPS, TASK_TYPES, Step

SPLITS = ("train", "valid")
GENERATOR = "household-v1"  # bump when a game for the same id and knobs would change
PICK, TWO, LOOK, HEAT, COOL, CLEAN = TASK_TYPES
OPENABLE = frozenset({"cabinet", "drawer", "fridge", "microwave", "safe"})
UNIQUE = frozenset({"fridge", "microwave", "sinkbasin", "coffeemachine", "bed", "toilet", "safe", "desk"})
LAMP, LAMP_HOLDERS = "desklamp", ("desk", "dresser", "sidetable")
#: room -> (receptacle types, portable object types)
ROOMS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "kitchen": (("cabinet", "coffeemachine", "countertop", "diningtable", "drawer", "fridge", "garbagecan",
                 "microwave", "shelf", "sinkbasin"),
                ("apple", "bowl", "bread", "cup", "egg", "knife", "lettuce", "mug", "pan", "plate", "potato",
                 "saltshaker", "spoon", "tomato")),
    "bedroom": (("armchair", "bed", "desk", "drawer", "dresser", "garbagecan", "safe", "shelf", "sidetable"),
                ("alarmclock", "book", "bowl", "cd", "cellphone", "creditcard", "keychain", "mug", "pen", "pencil",
                 "pillow", "vase", "watch")),
    "bathroom": (("cabinet", "countertop", "drawer", "garbagecan", "shelf", "sinkbasin", "toilet"),
                 ("candle", "cloth", "soapbar", "soapbottle", "spraybottle", "toiletpaper")),
}
HEATABLE = frozenset({"apple", "bread", "cup", "egg", "mug", "plate", "potato", "tomato"})
COOLABLE = HEATABLE | {"lettuce", "pan"}
CLEANABLE = frozenset({"apple", "bowl", "cloth", "cup", "egg", "knife", "lettuce", "mug", "pan", "plate", "potato",
                       "soapbar", "spoon", "tomato"})
#: task type -> (verb, appliance type, objects it accepts) for the three "then place" tasks
APPLIANCE = {HEAT: ("heat", "microwave", HEATABLE), COOL: ("cool", "fridge", COOLABLE),
             CLEAN: ("clean", "sinkbasin", CLEANABLE)}
#: the two phrasings ALFWorld uses per task type ({o}: object type, {r}: receptacle type)
TASK_TEXT = {
    PICK: ("put a {o} in {r}", "put some {o} on {r}"),
    TWO: ("put two {o} in {r}", "find two {o} and put them in {r}"),
    LOOK: ("look at {o} under the desklamp", "examine the {o} with the desklamp"),
    HEAT: ("put a hot {o} in {r}", "heat some {o} and put it in {r}"),
    COOL: ("put a cool {o} in {r}", "cool some {o} and put it in {r}"),
    CLEAN: ("put a clean {o} in {r}", "clean some {o} and put it in {r}"),
}
#: every sentence the game says, with ALFWorld 0.4's wording (alfred.twl2); vocabulary() reads them too
SAY = {
    "intro": "You are in the middle of a room. Looking quickly around you, you see {l}.\n\nYour task is to: {t}.",
    "arrive": "You arrive at {r}. ", "open_in": "The {r} is open. In it, you see {l}.", "closed": "The {r} is closed.",
    "on": "On the {r}, you see {l}.", "open": "You open the {r}. ", "close": "You close the {r}.",
    "take": "You pick up the {o} from the {r}.", "move": "You move the {o} to the {r}.",
    "apply": "You {v} the {o} using the {r}.", "use": "You turn on the {o}.", "facing": "You are facing the {r}. "
    "Next to it, you see nothing.", "carry": "You are carrying: {l}.", "empty": "You are not carrying anything.",
    "plain": "There's nothing special about {o}.", "state": "This is a {s} {o}.", "invalid": "Nothing happens.",
}
STATES = ("hot", "cold", "clean", "hot and clean", "cool and clean")
ACTIONS = ("go to {r}", "open {r}", "close {r}", "take {o} from {r}", "move {o} to {r}", "heat {o} with {r}",
           "cool {o} with {r}", "clean {o} with {r}", "use {o}", "examine {r}", "examine {o}", "look", "inventory")
#: words, newline runs (the project's word-level tokenizer cannot split "\n" as a character), single characters
TOKEN = re.compile(r"[A-Za-z']+|\n+|.", re.S)


def kind(name: str) -> str:
    """``"apple 2"`` -> ``"apple"``."""
    return name.rsplit(" ", 1)[0]


def tokenize(text: str) -> list[str]:
    """The split :func:`vocabulary` is closed under: words (letters and ``'``), ``"\\n\\n"``, single characters."""
    return TOKEN.findall(text)


def vocabulary() -> list[str]:
    """Every token (see :func:`tokenize`) of every observation, task text and admissible action, sorted: the fixed
    list a word-level tokenizer is built from (``harness.data.wordlevel``). Built from the templates above, not from
    sampled games, so it is complete by construction (the tests check it against many played games). Pass the
    entries longer than one character as ``words`` so each is one token."""
    text = [*SAY.values(), *STATES, *ACTIONS, "a and nothing 0123456789 ,.", *LAMP_HOLDERS, LAMP]
    text += [t for pair in TASK_TEXT.values() for t in pair]
    text += [n for recs, objs in ROOMS.values() for n in recs + objs]
    return sorted({tok for s in text for tok in tokenize(re.sub(r"\{\w\}", " ", s))})


@dataclass(frozen=True)
class HouseholdGame:
    """One generated game: receptacles and objects (``"<type> <n>"``, sorted), where each object starts (receptacle
    index), the task and its goal (object type ``target``; receptacle type ``goal``, ``None`` for the lamp task)."""
    game_id: str
    task_type: str
    task: str
    room: str
    receptacles: tuple[str, ...]
    objects: tuple[str, ...]
    start: tuple[int, ...]
    target: str
    goal: str | None


@dataclass(frozen=True)
class State:
    """A game state. ``loc``: receptacle index (-1: the middle of the room); ``where``: receptacle index per object
    (-1: in the agent's hand); the sets hold receptacle indices (``opened``) or object indices (the rest)."""
    loc: int
    where: tuple[int, ...]
    opened: frozenset = frozenset()
    hot: frozenset = frozenset()
    cool: frozenset = frozenset()
    clean: frozenset = frozenset()
    lit: frozenset = frozenset()

    @property
    def held(self) -> int | None:
        return next((i for i, r in enumerate(self.where) if r == -1), None)


def initial_state(game: HouseholdGame) -> State:
    return State(loc=-1, where=game.start)


def _listing(names: list[str]) -> str:
    items = [f"a {n}" for n in names]
    if not items:
        return "nothing"
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + ", and " + items[-1]


def _contents(game: HouseholdGame, s: State, r: int) -> str:
    name = game.receptacles[r]
    inside = _listing([o for o, w in zip(game.objects, s.where) if w == r])
    if kind(name) in OPENABLE:
        return SAY["open_in"].format(r=name, l=inside) if r in s.opened else SAY["closed"].format(r=name)
    return SAY["on"].format(r=name, l=inside)


def _examine(game: HouseholdGame, s: State, o: int) -> str:
    flags = [f for f, on in (("hot", o in s.hot), ("cool", o in s.cool), ("clean", o in s.clean)) if on]
    if not flags:
        return SAY["plain"].format(o=game.objects[o])
    words = "cold" if flags == ["cool"] else " and ".join(flags)
    return SAY["state"].format(s=words, o=game.objects[o])


def successors(game: HouseholdGame, s: State, *, expert: bool = False) -> dict[str, tuple[State, str]]:
    """Every admissible action in ``s`` -> (next state, feedback). ``expert=True`` keeps only the actions a shortest
    plan can need (go, open, take/move/treat the target type, use the lamp); the tests prove that by full search."""
    out: dict[str, tuple[State, str]] = {}
    recs, objs, held = game.receptacles, game.objects, s.held
    for i, r in enumerate(recs):
        if i != s.loc:
            out[f"go to {r}"] = (replace(s, loc=i), SAY["arrive"].format(r=r) + _contents(game, s, i))
    if not expert:
        out["look"] = (s, SAY["facing"].format(r=recs[s.loc]) if s.loc >= 0 else
                       SAY["intro"].split("\n")[0].format(l=_listing(list(recs))))
        out["inventory"] = (s, SAY["carry"].format(l=_listing([objs[held]])) if held is not None else SAY["empty"])
        if held is not None:
            out[f"examine {objs[held]}"] = (s, _examine(game, s, held))
    if s.loc < 0:
        return out
    here = recs[s.loc]
    if kind(here) in OPENABLE:
        if s.loc not in s.opened:
            nxt = replace(s, opened=s.opened | {s.loc})
            out[f"open {here}"] = (nxt, SAY["open"].format(r=here) + _contents(game, nxt, s.loc))
        elif not expert:
            out[f"close {here}"] = (replace(s, opened=s.opened - {s.loc}), SAY["close"].format(r=here))
    if not expert:
        out[f"examine {here}"] = (s, _contents(game, s, s.loc))
    useful = (lambda o: kind(objs[o]) == game.target) if expert else (lambda o: True)
    reachable = kind(here) not in OPENABLE or s.loc in s.opened
    for o, w in enumerate(s.where):
        if w != s.loc:
            continue
        if kind(objs[o]) == LAMP:
            out[f"use {objs[o]}"] = (replace(s, lit=s.lit | {o}), SAY["use"].format(o=objs[o]))
        elif held is None and reachable and useful(o):
            where = s.where[:o] + (-1,) + s.where[o + 1:]
            out[f"take {objs[o]} from {here}"] = (replace(s, where=where), SAY["take"].format(o=objs[o], r=here))
    if held is not None and useful(held):
        if reachable:
            where = s.where[:held] + (s.loc,) + s.where[held + 1:]
            out[f"move {objs[held]} to {here}"] = (replace(s, where=where), SAY["move"].format(o=objs[held], r=here))
        for verb, appliance, accepts in APPLIANCE.values():
            if kind(here) == appliance and kind(objs[held]) in accepts:
                out[f"{verb} {objs[held]} with {here}"] = (_treat(s, verb, held),
                                                           SAY["apply"].format(v=verb, o=objs[held], r=here))
    return out


def _treat(s: State, verb: str, o: int) -> State:
    """Heating makes an object hot and no longer cool, cooling the reverse (ALFWorld's HeatObject/CoolObject)."""
    if verb == "clean":
        return replace(s, clean=s.clean | {o})
    if verb == "heat":
        return replace(s, hot=s.hot | {o}, cool=s.cool - {o})
    return replace(s, cool=s.cool | {o}, hot=s.hot - {o})


def is_won(game: HouseholdGame, s: State) -> bool:
    """ALFWorld's PDDL goals: an object of the target type in a receptacle of the goal type (two distinct ones in
    the same receptacle for ``pick_two``; hot/cool/clean for the three treat tasks); for the lamp task, holding
    one while a lit desklamp stands on the receptacle the agent is at."""
    objs, recs = game.objects, game.receptacles
    if game.task_type == LOOK:
        held = s.held
        return (held is not None and kind(objs[held]) == game.target and
                any(o in s.lit and s.where[o] == s.loc for o in range(len(objs))))
    flag = {HEAT: s.hot, COOL: s.cool, CLEAN: s.clean}.get(game.task_type)
    placed = [w for o, w in enumerate(s.where) if kind(objs[o]) == game.target and w >= 0
              and kind(recs[w]) == game.goal and (flag is None or o in flag)]
    need = 2 if game.task_type == TWO else 1
    return any(placed.count(w) >= need for w in set(placed))


def expert_plan(game: HouseholdGame, start: State | None = None) -> list[str]:
    """A shortest walkthrough: breadth-first search from ``start`` (None: the game's start) over :func:`successors`
    (``expert=True``), actions tried in sorted order so the plan is deterministic. From a state an expert never
    reaches (holding a distractor after a random action) the search falls back to every admissible action."""
    start = initial_state(game) if start is None else start
    for expert in (True, False):
        parent: dict[State, tuple[State, str] | None] = {start: None}
        queue = deque([start])
        while queue:
            s = queue.popleft()
            if is_won(game, s):
                plan: list[str] = []
                while parent[s] is not None:
                    s, action = parent[s]
                    plan.append(action)
                return plan[::-1]
            for action, (nxt, _) in sorted(successors(game, s, expert=expert).items()):
                if nxt not in parent:
                    parent[nxt] = (s, action)
                    queue.append(nxt)
    raise RuntimeError(f"{game.game_id} has no solution from this state (a generator bug)")


def generate(game_id: str, *, base_seed: int = 0, n_receptacles: int = 5, n_distractors: int = 3,
             max_extra_targets: int = 1, task_types: tuple[str, ...] = TASK_TYPES) -> HouseholdGame:
    """Build ``household-<split>-<index>``: room, receptacles (the goal type, the task's appliance, a lamp holder in
    bedrooms, then random ones), target instances (never starting in a goal-type receptacle, so no game is won at
    the start), distractors of other types, and a desklamp in every bedroom."""
    _, split, index = game_id.split("-")
    seed = int.from_bytes(hashlib.sha256(f"{GENERATOR}:{base_seed}:{split}:{index}".encode()).digest()[:8], "big")
    rng = random.Random(seed)
    task_type = task_types[int(index) % len(task_types)]
    _, appliance, accepts = APPLIANCE.get(task_type, (None, None, None))
    rooms = ["bedroom"] if task_type == LOOK else [r for r in ROOMS if appliance in (None, *ROOMS[r][0])]
    room = rng.choice(rooms)
    rec_pool, obj_pool = ROOMS[room]
    target = rng.choice([o for o in obj_pool if accepts is None or o in accepts])
    goal = None if task_type == LOOK else rng.choice([r for r in rec_pool if r not in ("sinkbasin", appliance)])
    kinds = [k for k in (goal, appliance) if k]
    if room == "bedroom" and not set(kinds) & set(LAMP_HOLDERS):
        kinds.append(rng.choice([h for h in LAMP_HOLDERS if h in rec_pool]))
    while len(kinds) < n_receptacles:  # the first extra is never the goal type: targets need somewhere else
        kinds.append(rng.choice([r for r in rec_pool if not (r in UNIQUE and r in kinds)
                                 and (r != goal or any(k != goal for k in kinds))]))
    receptacles = _numbered(kinds)
    need = 2 if task_type == TWO else 1
    obj_kinds = [target] * (need + rng.randint(0, max_extra_targets))
    obj_kinds += [rng.choice([o for o in obj_pool if o != target]) for _ in range(n_distractors)]
    obj_kinds += [LAMP] if room == "bedroom" else []
    objects = _numbered(obj_kinds)
    sources = [i for i, r in enumerate(receptacles) if kind(r) != goal]
    holders = [i for i, r in enumerate(receptacles) if kind(r) in LAMP_HOLDERS]
    start = tuple(rng.choice(holders) if kind(o) == LAMP else rng.choice(sources) if kind(o) == target
                  else rng.randrange(len(receptacles)) for o in objects)
    task = rng.choice(TASK_TEXT[task_type]).format(o=target, r=goal)
    return HouseholdGame(game_id, task_type, task, room, receptacles, objects, start, target, goal)


def _numbered(kinds: list[str]) -> tuple[str, ...]:
    """``["drawer", "bed", "drawer"]`` -> ``("bed 1", "drawer 1", "drawer 2")``."""
    return tuple(f"{k} {sorted(kinds)[:i + 1].count(k)}" for i, k in enumerate(sorted(kinds)))


class HouseholdEnv:
    """The smoke household as a :class:`~harness.envs.base.TextEnv`: ``n_games`` games of one split, ids
    ``household-<split>-<i>``. Knobs: receptacles per room, distractor objects, extra target instances, the task
    types dealt round-robin, the step budget. Actions are matched after lower-casing and collapsing spaces."""

    def __init__(self, split: str = "train", n_games: int = 60, *, base_seed: int = 0, n_receptacles: int = 5,
                 n_distractors: int = 3, max_extra_targets: int = 1, task_types: tuple[str, ...] = TASK_TYPES,
                 max_steps: int = MAX_STEPS) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
        bad = [t for t in task_types if t not in TASK_TYPES]
        if bad or not task_types:
            raise ValueError(f"unknown task types {bad or '(none given)'}; valid: {', '.join(TASK_TYPES)}")
        for name, value, low in (("n_games", n_games, 1), ("n_receptacles", n_receptacles, 3),
                                 ("n_distractors", n_distractors, 0), ("max_extra_targets", max_extra_targets, 0),
                                 ("max_steps", max_steps, 1)):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        self.split, self.max_steps = split, max_steps
        self.knobs = dict(base_seed=base_seed, n_receptacles=n_receptacles, n_distractors=n_distractors,
                          max_extra_targets=max_extra_targets, task_types=tuple(task_types))
        self._ids = [f"household-{split}-{i}" for i in range(n_games)]
        self._known = set(self._ids)
        self.task, self.task_type = "", ""
        self._game: HouseholdGame | None = None
        self._state: State | None = None
        self._moves: dict[str, tuple[State, str]] = {}
        self._steps, self._done = 0, True

    def game_ids(self) -> list[str]:
        return list(self._ids)

    @property
    def state(self) -> State | None:
        """The current game state (an expert replans from it: :func:`expert_plan`)."""
        return self._state

    def protocol(self) -> dict:
        """Everything that fixes this environment's games and episodes (for a run's protocol hash)."""
        return {"generator": GENERATOR, "split": self.split, "n_games": len(self._ids), "max_steps": self.max_steps,
                **{k: list(v) if isinstance(v, tuple) else v for k, v in self.knobs.items()}}

    def game(self, game_id: str) -> HouseholdGame:
        """The generated game behind ``game_id`` (for :func:`expert_plan` and tests)."""
        if game_id not in self._known:
            raise KeyError(f"unknown game id {game_id!r}; valid: {', '.join(self._ids[:3])}, ... "
                           f"({len(self._ids)} ids, household-{self.split}-0..{len(self._ids) - 1})")
        return generate(game_id, **self.knobs)

    def reset(self, game_id: str) -> Step:
        self._game = self.game(game_id)
        self.task, self.task_type = self._game.task, self._game.task_type
        self._state, self._steps, self._done = initial_state(self._game), 0, False
        intro = SAY["intro"].format(l=_listing(list(self._game.receptacles)), t=self.task)
        return self._emit(intro, valid=True, won=False)

    def step(self, action: str) -> Step:
        if self._game is None or self._done:
            raise RuntimeError("the episode is over (or never started): call reset(game_id) first")
        self._steps += 1
        move = self._moves.get(" ".join(str(action).lower().split()))
        if move is None:
            return self._emit(SAY["invalid"], valid=False, won=False)
        self._state, feedback = move
        return self._emit(feedback, valid=True, won=is_won(self._game, self._state))

    def _emit(self, observation: str, *, valid: bool, won: bool) -> Step:
        self._done = won or self._steps >= self.max_steps
        self._moves = successors(self._game, self._state)
        return Step(observation=observation, admissible=tuple(sorted(self._moves)), won=won, done=self._done,
                    valid=valid, steps=self._steps, info={"game_id": self._game.game_id, "task_type": self.task_type})

    def close(self) -> None:
        self._game = self._state = None
        self._moves, self._done = {}, True
