"""Throughput of the real ALFWorld games (harness.envs.alfworld) under random-admissible play, on one core.

A measure only (nothing is asserted): it prints the engine's own cost with no model in the loop, over ``--games``
games spread evenly over the valid_unseen manifest (every task type), each played ``episodes / games`` times in a row
(as a GRPO group plays one game G times):

  * episodes/hour and steps/s of ``reset`` + ``step`` with a uniformly random admissible action (seeded), to the
    step budget (50) or a win;
  * the time to load a new game (parse its PDDL and grammar, ground it) vs. to reset the loaded one (a GRPO group
    plays one game G times, so the second is the common case);
  * the random policy's success rate and mean episode length.

The process is pinned to one CPU where the OS allows it (``os.sched_setaffinity``), so the numbers are per core.

``--workers N`` measures instead, side by side in one run, the environment workers of the episode player
(:mod:`harness.envs.workers`): ``--batch`` concurrent episodes (one per game, as ``run_episodes`` holds them)
stepped as one batch per turn with random admissible actions, with the environments in this process and in ``N``
worker processes, for the smoke household and for ALFWorld (the process is not pinned: the workers need the
cores). It prints episodes/hour and the speed-up, the CPU seconds spent (this process and the workers: on a
shared machine the wall time depends on the load, the CPU time much less), and checks that both modes played the
same episodes.

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/bench_alfworld_env.py [--episodes 12] [--games 6] [--seed 0]
        [--data-dir ../shared/data]
    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/bench_alfworld_env.py --workers 2 [--batch 4]
        [--household-batch 60]
"""
from __future__ import annotations

import argparse
import functools
import os
import random
import resource
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

from harness.envs.alfworld import ALFWorldEnv  # noqa: E402
from harness.envs.household import HouseholdEnv  # noqa: E402
from harness.envs.workers import make_envs  # noqa: E402


def _cpu() -> float:
    """CPU seconds of this process and its reaped children (the workers, once joined)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def play_batch(factory, game_ids: list[str], workers: int, seed: int) -> tuple[float, float, list[tuple]]:
    """(wall seconds, CPU seconds, per-episode (won, steps)) of one batch: every game's episode reset at once, then
    each turn every live episode steps with a random admissible action (one RNG per episode: the same play in
    either mode)."""
    rngs = [random.Random(f"{seed}:{i}") for i in range(len(game_ids))]
    t0, c0 = time.perf_counter(), _cpu()
    envs = make_envs(factory, workers)
    try:
        live = dict(enumerate(s.step for s in envs.reset(game_ids)))
        final = {}
        while live:
            seen = envs.step({i: rngs[i].choice(step.admissible) for i, step in live.items()})
            live = {i: s.step for i, s in seen.items() if not s.step.done}
            final.update({i: (s.step.won, s.step.steps) for i, s in seen.items() if s.step.done})
    finally:
        envs.close()
    return time.perf_counter() - t0, _cpu() - c0, [final[i] for i in range(len(game_ids))]


def compare_workers(args) -> None:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    alf = functools.partial(ALFWorldEnv, data_dir=args.data_dir)
    alf_ids = alf().game_ids()
    cases = [("household", functools.partial(HouseholdEnv, "train", args.household_batch),
              [f"household-train-{i}" for i in range(args.household_batch)]),
             ("alfworld valid_unseen", alf, [alf_ids[i * len(alf_ids) // args.batch] for i in range(args.batch)])]
    print(f"environment workers, random-admissible play, one batch of concurrent episodes per row, {cores} core(s), "
          f"load average {os.getloadavg()[0]:.1f} at start")
    print(f"  {'env':<22} {'episodes':>8} {'workers':>7} {'seconds':>9} {'episodes/hour':>14} {'speed-up':>8} "
          f"{'CPU s':>8} {'episodes/CPU-hour':>18}")
    for name, factory, ids in cases:
        base, ref = None, None
        for w in (0, args.workers):
            secs, cpu, outcome = play_batch(factory, ids, w, args.seed)
            base, ref = base or secs, ref or outcome
            assert outcome == ref, f"{name}: workers={w} played different episodes"
            print(f"  {name:<22} {len(ids):>8} {w:>7} {secs:>9.2f} {len(ids) / secs * 3600:>14.0f} "
                  f"{base / secs:>7.2f}x {cpu:>8.2f} {len(ids) / cpu * 3600:>18.0f}")
        print(f"  {'':<22} mean steps {sum(s for _, s in ref) / len(ref):.1f}, random success "
              f"{sum(w for w, _ in ref) / len(ref):.2f}; same episodes in both modes")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--episodes", type=int, default=12)
    ap.add_argument("--games", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--workers", type=int, default=0, help="compare in-process with N environment workers")
    ap.add_argument("--batch", type=int, default=4, help="--workers: concurrent ALFWorld episodes (one per game)")
    ap.add_argument("--household-batch", type=int, default=60, help="--workers: concurrent household episodes")
    args = ap.parse_args()
    if args.workers:
        compare_workers(args)
        return
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"

    t0 = time.perf_counter()
    env = ALFWorldEnv(data_dir=args.data_dir)
    construct = time.perf_counter() - t0
    all_ids = env.game_ids()
    ids = [all_ids[i * len(all_ids) // args.games] for i in range(args.games)]
    rng = random.Random(args.seed)
    steps = wins = 0
    step_time, new_loads, same_resets = 0.0, [], []
    t0, last = time.perf_counter(), None
    for e in range(args.episodes):
        gid = ids[(e * len(ids)) // args.episodes]  # consecutive episodes share a game (the env keeps the last one)
        fresh, last = gid != last, gid
        t = time.perf_counter()
        step = env.reset(gid)
        (new_loads if fresh else same_resets).append(time.perf_counter() - t)
        t = time.perf_counter()
        while not step.done:
            step = env.step(rng.choice(step.admissible))
        step_time += time.perf_counter() - t
        steps += step.steps
        wins += step.won
    play = time.perf_counter() - t0
    env.close()

    mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
    print(f"ALFWorld valid_unseen, random-admissible play on {cores} core(s): {args.episodes} episodes over "
          f"{len(ids)} games (step budget {env.max_steps}); construct + verify 134 games {construct:.2f} s")
    print(f"  episodes/hour      {args.episodes / play * 3600:10.0f}")
    print(f"  steps/s            {steps / step_time:10.2f}   ({1000 * step_time / steps:.0f} ms/step)")
    print(f"  load new game      {mean(new_loads):10.2f} s   reset loaded game {mean(same_resets):.2f} s")
    print(f"  random success     {wins / args.episodes:10.3f}   mean episode length {steps / args.episodes:.1f}")


if __name__ == "__main__":
    main()
