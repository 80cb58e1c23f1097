r"""The policy cliff on a tiny LM (The Policy Cliff, arXiv 2507.20150; analysis ``cliff_sweep``): the rate of a
behaviour of each final checkpoint of a sweep over reward weights, without and with an entropy bonus, as curves the
claim check :func:`harness.claims.papers.policy_cliff.policy_cliff_jump` reads (the same form as the exact bandit's,
:mod:`harness.analyze.cliff`).

Per checkpoint (``measure``; one file per checkpoint, as the DAG runs it). The behaviour is "the response has a
check step" (:func:`harness.data.reasoning.has_check`: the reasoning task's planning word ``check``). The first
``prompts`` held-out prompts of the job's split are answered once each (one sample per prompt) at the tier's
evaluation temperature with at most its ``max_new_tokens`` tokens, top-k and top-p off, by the held-out
evaluation's sampler (:func:`harness.evaluate.heldout.heldout_samples` with ``k = 1``: one seeded torch RNG stream,
``seed``; it answers each batch greedily first, which gives ``greedy_acc``). Result: ``check_rate`` (share of the
responses with a check step, with its binomial standard error), ``accuracy`` (share correct) and the shares correct
with / without a check step, per prompt ``check`` and ``correct`` (0/1), and the run's sweep point read from its
job: ``eps`` (the method's hyperparameter) and ``entropy_coef`` (the job's TRL setting; absent: 0).

Collected per card (``collect``; the settings block ``tiers.<tier>.analysis.cliff_sweep``: ``methods`` measured,
the grid ``eps`` and the entropy coefficients ``taus`` of the curves, ``prompts``, ``seed``). Every sweep point
(tau, eps) of the grid needs at least one run: a missing point, a method without a record, a run off the grid or
two runs of one (point, seed) is an error naming it. One curve per tau: ``unregularised`` (tau 0) and ``tau=<c>``.
Per curve, over the grid (ascending eps):

- ``target_rate`` / ``target_rate_sd``: mean and sample standard deviation (ddof 1; null with one seed) of the
  check rate over the seeds at each eps; ``rates`` the per-seed values, ``n_runs`` their number;
- ``jump_tv``: the mean over seeds of ``|rate(eps_+) - rate(eps_-)|``, eps_- and eps_+ the grid neighbours of 0
  (-0.05 and +0.05 on the card's grid), the same seed at both points: the total variation between the two
  behaviour distributions (check / no check) of one seed; ``jump_tv_sd`` its sample standard deviation over seeds
  (null with one), ``jump_target_rate`` the mean signed change ``rate(eps_+) - rate(eps_-)``, ``n_seeds`` the seeds
  present at both points (the check's ``min_seeds``), ``jump_seeds`` and ``jumps`` per seed;
- ``max_l1_slope``: the largest ``||pi_{i+1} - pi_i||_1 / (eps_{i+1} - eps_i)`` between neighbouring grid points,
  ``pi_i`` the mean behaviour distribution ``(rate, 1 - rate)`` at eps_i, so ``2 |mean-rate change| / eps step``
  (the bandit's definition, where ``pi`` is the policy over arms); ``max_rate_slope`` is ``|mean-rate change| /
  eps step`` (half of it); ``tv_to_eps0`` is ``|mean rate - mean rate at 0|`` per grid point.

All records must share one protocol hash (prompts, seed, sampling, prompt digest), and it must be the block's.

Command line (the DAG's ``rules/analyze.smk``)::

    python -m harness.analyze.cliff_sweep --job JOB/job.json --model-dir JOB/model --prompts 512 --seed 0 \\
        --source tier=T,method=M,seed=S,job_key=K --out JOB/analysis/cliff_sweep.json
    python -m harness.analyze.cliff_sweep collect FILE... --settings P:T --source paper=P,tier=T --out FILE
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

from harness.analyze.cardargs import check_keys, checkpoint_command
from harness.analyze.record import same_protocol
from harness.results import content_hash

NAME = "cliff_sweep"
DEFAULTS = {"prompts": 512, "seed": 0}
KEYS = ("methods", "eps", "taus", "prompts", "seed")
BEHAVIOUR = "harness.data.reasoning.has_check: 'check' is a whitespace-separated word of the response"
SAMPLER = "harness.evaluate.heldout.heldout_samples, k = 1 (greedy pass first, one seeded RNG stream)"
#: two grid values closer than this are the same point (cards write 0.05, jobs carry the float)
GRID_TOL = 1e-9


# --------------------------------------------------------------------------------------- per checkpoint ------
def measure(job: dict, model_dir, *, prompts: int, seed: int, data_dir=".", threads: int = 1,
            batch_size: int = 256) -> tuple[dict, dict]:
    """(settings, result) of one checkpoint (module docstring)."""
    import torch

    from harness.config.tiers import DataSpec, EvalSpec, parse as parse_setting
    from harness.data.load import load_model_and_data
    from harness.data.reasoning import has_check
    from harness.data.smoke_tasks import smoke_task
    from harness.evaluate.heldout import check_job, heldout_samples

    job = check_job(job)
    task = None
    if job["model"]["kind"] == "smoke":
        task = smoke_task(parse_setting(DataSpec, job["data"], "job data").task)
    if task is None or " check " not in task.planning_words:
        raise ValueError(f"cliff_sweep: the job's task {job['data'].get('task')!r} has no check step; supported: "
                         "the reasoning smoke tasks (reasoning, reasoning_calc)")
    if not (isinstance(prompts, int) and prompts >= 1 and isinstance(seed, int) and seed >= 0):
        raise ValueError(f"cliff_sweep: prompts >= 1 and seed >= 0 (integers) are needed, got {prompts!r}, {seed!r}")
    ev = parse_setting(EvalSpec, job["eval"], "job eval")
    temperature, max_new = float(ev.temperature), int(ev.max_new_tokens)
    torch.set_num_threads(threads)
    model, tok, _, val_rows, _, score = load_model_and_data(job, Path(model_dir), Path(data_dir))
    if len(val_rows) < prompts:
        raise ValueError(f"cliff_sweep: {prompts} prompts asked, the held-out split has {len(val_rows)}")
    rows = val_rows[:prompts]
    greedy, sampled, texts = heldout_samples(model, tok, [r["prompt"] for r in rows], [r["answer"] for r in rows],
                                             score=score, k=1, temperature=temperature, max_new_tokens=max_new,
                                             seed=seed, batch_size=batch_size, environment=task.environment)
    check = [int(has_check(t[0])) for t in texts]
    correct = [int(s[0]) for s in sampled]
    n = len(rows)
    rate = sum(check) / n
    coef = (job.get("trl") or {}).get("entropy_coef", 0.0)
    settings = {"prompts": prompts, "seed": seed, "samples_per_prompt": 1, "temperature": temperature,
                "max_new_tokens": max_new, "top_k": 0, "top_p": 1.0, "prompts_sha256": content_hash(rows),
                "task": task.name, "behaviour": BEHAVIOUR, "sampler": SAMPLER}
    result = {
        "check_rate": rate, "check_rate_se": math.sqrt(rate * (1 - rate) / n), "n_check": sum(check), "n_prompts": n,
        "accuracy": sum(correct) / n, "greedy_acc": sum(greedy) / n,
        "correct_check_rate": sum(c and k for c, k in zip(correct, check)) / n,
        "correct_plain_rate": sum(c and not k for c, k in zip(correct, check)) / n,
        "sweep_point": {"eps": (job.get("hparams") or {}).get("eps"),
                        "entropy_coef": float(coef) if coef is not None else 0.0},
        "train_steps": (job.get("trl") or {}).get("max_steps"), "job_config_hash": job.get("config_hash"),
        "per_prompt": {"check": check, "correct": correct},
    }
    return settings, result


# -------------------------------------------------------------------------------------------- settings ------
def parse_settings(raw: dict | None) -> dict:
    """The card's block with defaults filled in; a bad value raises ValueError naming what is valid."""
    s = {**DEFAULTS, **check_keys(raw, KEYS, NAME)}
    for k in ("methods", "eps", "taus"):
        if not isinstance(s.get(k), list) or not s[k]:
            raise ValueError(f"cliff_sweep settings: {k} must be a non-empty list (methods: the sweep's method "
                             f"names; eps: the grid; taus: the entropy coefficients of the curves)")
    for k in ("prompts", "seed"):
        if not isinstance(s[k], int) or isinstance(s[k], bool) or s[k] < (1 if k == "prompts" else 0):
            raise ValueError(f"cliff_sweep settings: {k} must be an integer (prompts >= 1, seed >= 0), got {s[k]!r}")
    if not all(isinstance(m, str) and m for m in s["methods"]) or len(set(s["methods"])) != len(s["methods"]):
        raise ValueError(f"cliff_sweep settings: methods must be distinct method names, got {s['methods']!r}")
    try:
        eps, taus = [float(x) for x in s["eps"]], [float(x) for x in s["taus"]]
    except (TypeError, ValueError):
        raise ValueError("cliff_sweep settings: eps and taus must be numbers") from None
    if any(isinstance(x, bool) for x in s["eps"] + s["taus"]):
        raise ValueError("cliff_sweep settings: eps and taus must be numbers")
    if any(b - a <= GRID_TOL for a, b in zip(eps, eps[1:])):
        raise ValueError(f"cliff_sweep settings: eps must be strictly increasing, got {s['eps']!r}")
    zero = [i for i, e in enumerate(eps) if abs(e) <= GRID_TOL]
    if not zero or zero[0] == 0 or zero[0] == len(eps) - 1:
        raise ValueError(f"cliff_sweep settings: eps must contain 0 with a grid point on each side (the jump is "
                         f"measured between the neighbours of 0), got {s['eps']!r}")
    if any(t < 0 for t in taus) or len({round(t / GRID_TOL) for t in taus}) != len(taus):
        raise ValueError(f"cliff_sweep settings: taus must be distinct entropy coefficients >= 0, got {s['taus']!r}")
    return {**s, "eps": eps, "taus": taus}


# --------------------------------------------------------------------------------------------- collect ------
def curve_name(tau: float) -> str:
    """``unregularised`` for tau 0, else ``tau=<tau>`` (the bandit's names)."""
    return "unregularised" if tau == 0 else f"tau={tau:g}"


def _sd(x) -> float | None:
    return float(np.std(x, ddof=1)) if len(x) >= 2 else None


def _on_grid(value: float, grid: list[float]) -> float | None:
    hit = [g for g in grid if abs(g - value) <= GRID_TOL]
    return hit[0] if hit else None


def collect(records: list[dict], settings: dict) -> dict:
    """The card's curve file's ``result`` from per-checkpoint records (module docstring)."""
    s = parse_settings(settings)
    same_protocol(records, NAME, "prompts, seed, sampling and prompt digest")
    proto = records[0]["settings"]
    if (proto.get("prompts"), proto.get("seed")) != (s["prompts"], s["seed"]):
        raise ValueError(f"cliff_sweep collect: the records were measured on {proto.get('prompts')} prompts with seed "
                         f"{proto.get('seed')}; the settings ask for {s['prompts']} prompts, seed {s['seed']}")
    runs, where = {}, {}
    for r in records:
        src = r.get("source") or {}
        m, seed = src.get("method"), src.get("seed")
        if m not in s["methods"]:
            raise ValueError(f"cliff_sweep collect: a record of method {m!r}, not among the settings' methods "
                             f"({', '.join(s['methods'])})")
        if seed is None:
            raise ValueError(f"cliff_sweep collect: the record of {m} names no seed")
        pt = r["result"].get("sweep_point") or {}
        if pt.get("eps") is None:
            raise ValueError(f"cliff_sweep collect: the run {m}/seed{seed} has no eps (not a sweep point)")
        eps, tau = _on_grid(float(pt["eps"]), s["eps"]), _on_grid(float(pt.get("entropy_coef") or 0.0), s["taus"])
        if eps is None or tau is None:
            raise ValueError(f"cliff_sweep collect: the run {m}/seed{seed} (eps {pt['eps']}, entropy_coef "
                             f"{pt.get('entropy_coef')}) is off the grid (eps {s['eps']}, taus {s['taus']})")
        key = (tau, eps, int(seed))
        if key in where:
            raise ValueError(f"cliff_sweep collect: two runs of the sweep point tau {tau:g}, eps {eps:+g}, seed "
                             f"{seed}: {where[key]} and {m}")
        where[key] = m
        runs[f"{m}/seed{seed}"] = {"method": m, "seed": int(seed), "job_key": src.get("job_key"), "tau": tau,
                                   "eps": eps, "check_rate": r["result"]["check_rate"],
                                   "accuracy": r["result"]["accuracy"], "train_steps": r["result"].get("train_steps"),
                                   "record_hash": r.get("content_hash")}
    missing_methods = sorted(set(s["methods"]) - {v["method"] for v in runs.values()})
    missing_points = [f"tau {t:g} eps {e:+g}" for t in s["taus"] for e in s["eps"]
                      if not any(k[0] == t and k[1] == e for k in where)]
    if missing_points or missing_methods:
        raise ValueError("cliff_sweep collect: the sweep is incomplete: "
                         + "; ".join(x for x in (f"sweep points without a run: {', '.join(missing_points)}"
                                                 if missing_points else "",
                                                 f"methods without a record: {', '.join(missing_methods)}"
                                                 if missing_methods else "") if x))
    i0 = next(i for i, e in enumerate(s["eps"]) if abs(e) <= GRID_TOL)
    lo, hi = s["eps"][i0 - 1], s["eps"][i0 + 1]
    curves = {}
    for tau in s["taus"]:
        by_eps = [{v["seed"]: v["check_rate"] for v in runs.values() if v["tau"] == tau and v["eps"] == e}
                  for e in s["eps"]]
        mean = np.array([np.mean(list(d.values())) for d in by_eps])
        seeds = sorted(set(by_eps[i0 - 1]) & set(by_eps[i0 + 1]))
        if not seeds:
            raise ValueError(f"cliff_sweep collect: curve tau {tau:g}: no seed has runs at both eps {lo:+g} "
                             f"({sorted(by_eps[i0 - 1])}) and {hi:+g} ({sorted(by_eps[i0 + 1])})")
        d = np.array([by_eps[i0 + 1][x] - by_eps[i0 - 1][x] for x in seeds])
        step = np.abs(np.diff(mean)) / np.diff(np.asarray(s["eps"]))
        curves[curve_name(tau)] = {
            "tau": tau, "eps": s["eps"], "target_rate": mean.tolist(),
            "target_rate_sd": [_sd(list(x.values())) for x in by_eps], "n_runs": [len(x) for x in by_eps],
            "rates": [{str(k): v for k, v in sorted(x.items())} for x in by_eps],
            "tv_to_eps0": np.abs(mean - mean[i0]).tolist(),
            "jump_eps": [lo, hi], "jump_seeds": seeds, "jumps": d.tolist(),
            "jump_tv": float(np.mean(np.abs(d))), "jump_tv_sd": _sd(np.abs(d)),
            "jump_target_rate": float(np.mean(d)), "n_seeds": len(seeds),
            "max_l1_slope": float(2 * step.max()), "max_rate_slope": float(step.max()),
        }
    return {"curves": curves, "runs": dict(sorted(runs.items())), "grid": {"eps": s["eps"], "taus": s["taus"]}}


def _summary(r: dict) -> list[str]:
    out = []
    for k, c in r["result"]["curves"].items():
        sd = "n/a" if c["jump_tv_sd"] is None else f"{c['jump_tv_sd']:.3f}"
        out.append(f"{k:<14} check rate {' '.join(f'{x:.2f}' for x in c['target_rate'])}; jump across 0: TV "
                   f"{c['jump_tv']:.3f} (sd {sd}, {c['n_seeds']} seeds), signed {c['jump_target_rate']:+.3f}")
    return out


def _report(r: dict, src: dict) -> str:
    m = r["result"]
    who = src.get("method") + (f"/seed{src['seed']}" if src.get("seed") is not None else "")
    return (f"{who}: check rate {m['check_rate']:.3f} (se {m['check_rate_se']:.3f}), accuracy {m['accuracy']:.3f}, "
            f"eps {m['sweep_point']['eps']}, entropy_coef {m['sweep_point']['entropy_coef']}")


def _options(p) -> None:
    p.add_argument("--prompts", type=int, default=DEFAULTS["prompts"])
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"])


def main(argv=None) -> int:
    return checkpoint_command(
        NAME, __doc__, argv, options=_options, report=_report, parse=parse_settings, collect=collect,
        report_collected=_summary, collect_help="per-checkpoint cliff_sweep records",
        measure=lambda a: measure(a.job, a.model_dir, prompts=a.prompts, seed=a.seed, data_dir=a.data_dir,
                                  threads=a.threads))


if __name__ == "__main__":
    sys.exit(main())
