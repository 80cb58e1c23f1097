"""Environment worker processes (:mod:`harness.envs.workers`, ``run_episodes(workers=N)``).

- A sampled run with the environments in 2 worker processes is identical, token for token, log-prob for log-prob,
  to the in-process run with the same seed; a scripted expert wins every game through 3 workers.
- The environments really live in the workers (each step reports its process id: N distinct ones, not ours), and
  episode ``i`` lives in worker ``i % N``.
- Errors: an environment's exception comes back with its own type and message (and the worker's traceback as a
  note); a worker that dies is a RuntimeError naming it; no worker outlives the call; a factory that cannot be
  sent to a ``spawn`` worker is a ValueError saying what to pass; bad ``workers`` values are refused.
- The real ALFWorld engine plays the same random-admissible episodes in workers as in-process.
"""
from __future__ import annotations

import functools
import multiprocessing as mp
import os
import random

import pytest

from harness.envs.base import Step
from harness.envs.household import HouseholdEnv
from harness.envs.workers import InProcessEnvs, WorkerEnvs, make_envs

N_GAMES = 12


class PidEnv(HouseholdEnv):
    """The household, with the stepping process's id in every step's ``info``."""

    def _emit(self, observation: str, *, valid: bool, won: bool) -> Step:
        step = super()._emit(observation, valid=valid, won=won)
        return Step(**{**step.__dict__, "info": {**step.info, "pid": os.getpid()}})


class DyingEnv(HouseholdEnv):
    def step(self, action: str) -> Step:
        os._exit(3)


def random_play(envs, game_ids, seed=0, max_steps=6):
    """Random-admissible play of one episode per game id through ``envs``: every Seen, in order."""
    rng, out = random.Random(seed), []
    seen = envs.reset(game_ids)
    out.append(seen)
    live = {i: s for i, s in enumerate(seen)}
    for _ in range(max_steps):
        if not live:
            break
        result = envs.step({i: rng.choice(s.step.admissible) for i, s in sorted(live.items())})
        out.append(result)
        live = {i: s for i, s in result.items() if not s.step.done}
    envs.close()
    return out


def test_worker_envs_equal_in_process_and_live_in_the_workers():
    factory = functools.partial(PidEnv, "train", N_GAMES)
    games = [f"household-train-{i}" for i in range(5)]
    local = random_play(InProcessEnvs(factory), games)
    remote = random_play(WorkerEnvs(factory, 2), games)
    strip = lambda s: (s.step.observation, s.step.admissible, s.step.won, s.step.done, s.step.steps, s.task,  # noqa
                       s.task_type)
    assert [[strip(s) for s in r] for r in local[:1]] == [[strip(s) for s in r] for r in remote[:1]]
    for a, b in zip(local[1:], remote[1:]):
        assert {i: strip(s) for i, s in a.items()} == {i: strip(s) for i, s in b.items()}
    assert {s.step.info["pid"] for s in local[1].values()} == {os.getpid()}
    pids = {i: s.step.info["pid"] for i, s in remote[1].items()}
    assert os.getpid() not in pids.values() and len(set(pids.values())) == 2
    assert all(pids[i] == pids[i % 2] for i in pids)  # episode i in worker i % 2
    assert mp.active_children() == []


def test_errors_come_back_with_their_type_and_no_worker_outlives_them():
    envs = WorkerEnvs(functools.partial(HouseholdEnv, "train", N_GAMES), 2)
    with pytest.raises(KeyError, match="household-train-99") as info:
        envs.reset(["household-train-0", "household-train-99"])
    assert any("raised in env worker 1" in n for n in getattr(info.value, "__notes__", []))
    envs.close()
    dying = WorkerEnvs(functools.partial(DyingEnv, "train", N_GAMES), 1)
    dying.reset(["household-train-0"])
    with pytest.raises(RuntimeError, match=r"env worker 0 died \(exit code 3\) during step"):
        dying.step({0: "look"})
    dying.close()
    assert mp.active_children() == []
    with pytest.raises(ValueError, match="workers must be an integer >= 0"):
        make_envs(functools.partial(HouseholdEnv, "train"), -1)
    with pytest.raises(ValueError, match="unknown start method 'thread'"):
        WorkerEnvs(functools.partial(HouseholdEnv, "train"), 1, start_method="thread")


@pytest.mark.skipif("spawn" not in mp.get_all_start_methods(), reason="no spawn start method")
def test_spawn_needs_a_picklable_factory():
    with pytest.raises(ValueError, match="functools.partial"):
        WorkerEnvs(lambda: HouseholdEnv("train", N_GAMES), 1, start_method="spawn")
    assert mp.active_children() == []
    seen = random_play(WorkerEnvs(functools.partial(HouseholdEnv, "train", N_GAMES), 1, start_method="spawn"),
                       ["household-train-1"], max_steps=2)
    assert seen[0][0].task and seen[-1][0].step.steps == 2


# -- run_episodes(workers=N) ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tok():
    import string

    pytest.importorskip("transformers")

    from harness.data.wordlevel import word_level_tokenizer
    from harness.envs.agent import COMPACT
    from harness.envs.household import vocabulary

    words = sorted({w for w in vocabulary() if len(w) > 1} | set(COMPACT.words()))
    chars = sorted(set(string.ascii_letters + string.digits + string.punctuation + " \n") - set(words))
    return word_level_tokenizer(["<pad>", "<bos>", "<eos>", "<unk>"] + words + chars, words)


@pytest.fixture(scope="module")
def model(tok):
    torch = pytest.importorskip("torch")
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, intermediate_size=64, max_position_embeddings=4096,
                      tie_word_embeddings=True, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id)
    return Qwen2ForCausalLM(cfg).eval()


FIELDS = ("game_id", "task_type", "prompt_ids", "completion_ids", "env_mask", "logprobs", "turn_ids", "actions", "won",
          "done", "steps", "invalid_actions", "unknown_actions", "reward")


def test_run_episodes_in_workers_is_identical_to_in_process(model, tok):
    import torch

    from harness.evaluate.episodes import run_episodes

    games = [f"household-train-{i}" for i in range(4)]
    kw = dict(num_generations=3, max_turns=4, max_new_tokens_per_turn=8, temperature=1.0, seed=3,
              invalid_penalty=0.1, max_episode_tokens=400)
    with torch.no_grad():
        local = run_episodes(model, tok, lambda: HouseholdEnv("train", N_GAMES), games, workers=0, **kw)
        remote = run_episodes(model, tok, lambda: HouseholdEnv("train", N_GAMES), games, workers=2, **kw)
    assert len(local.episodes) == len(remote.episodes) == 12
    for a, b in zip(local.episodes, remote.episodes):
        assert {f: getattr(a, f) for f in FIELDS} == {f: getattr(b, f) for f in FIELDS}
    assert sum(e.unknown_actions + e.invalid_actions for e in local.episodes) > 0  # the random model errs
    assert local.metrics() == remote.metrics()
    assert remote.timing["generate_calls"] == local.timing["generate_calls"] == 4
    assert all(remote.timing[k] >= 0 for k in ("reset_s", "env_s", "generate_s"))
    assert mp.active_children() == []


def test_scripted_expert_wins_every_game_through_workers(tok):
    from harness.evaluate.episodes import run_episodes
    from test_episodes import Scripted, expert_turns, scripts_for

    games = HouseholdEnv("train", N_GAMES).game_ids()[:6]
    policy = Scripted(tok, scripts_for(tok, games, expert_turns))
    batch = run_episodes(policy, tok, lambda: HouseholdEnv("train", N_GAMES), games, num_generations=2,
                         max_turns=12, max_new_tokens_per_turn=16, seed=0, workers=3)
    assert all(e.won and e.reward == 10.0 and e.invalid_actions == e.unknown_actions == 0 for e in batch.episodes)


# -- the real engine ----------------------------------------------------------------------------------------------

def test_alfworld_plays_the_same_in_workers():
    import importlib.util
    from pathlib import Path

    data = Path(__file__).resolve().parents[2] / "shared" / "data" / "alfworld" / "json_2.1.1" / "valid_unseen"
    if importlib.util.find_spec("alfworld") is None or not data.is_dir():
        pytest.skip("alfworld not installed or no ../shared/data/alfworld")
    from harness.envs.alfworld import ALFWorldEnv

    games = ["pick_heat_then_place_in_recep-Apple-None-Fridge-10/trial_T20190906_182259_116320",
             "look_at_obj_in_light-Pencil-None-DeskLamp-308/trial_T20190908_220545_153480"]
    factory = functools.partial(ALFWorldEnv, "valid_unseen")
    local = random_play(InProcessEnvs(factory), games, max_steps=3)
    remote = random_play(WorkerEnvs(factory, 2), games, max_steps=3)
    obs = lambda r: [(s.step.observation, s.step.admissible, s.step.won) for s in (r if isinstance(r, list)  # noqa
                                                                                    else r.values())]
    assert [obs(r) for r in local] == [obs(r) for r in remote]
    assert local[0][0].task_type == "pick_heat_then_place_in_recep" and local[0][1].task_type == "look_at_obj_in_light"
    assert mp.active_children() == []
