"""Throughput and robustness benchmark for harness.verify.

Prints
  * cases/second of ``Verifier(workers=N)`` on MATH500-style cases (each problem's
    reference solution as a correct response plus the same solution with its boxed
    answer perturbed as a wrong one), with fresh workers so parse caches start cold;
    ``--set minerva_math`` (or ``both``) uses Minerva-Math's reference solutions the
    same way (gold: the last ``\\boxed{}`` of the solution, as the benchmark loader takes it);
  * with ``--baseline DIR``, the same for another version of the verifier in the same
    run (``DIR/harness/verify``; e.g. ``mkdir -p DIR/harness/verify && git show
    REV:harness/verify/__init__.py > DIR/harness/verify/__init__.py`` for the one-file
    version), interleaved over ``--rounds`` rounds so both see the same machine load,
    and every case on which the two disagree;
  * math-verify's own single-process rate (``parse`` + ``verify`` with its
    default configs and signal timeouts) on the same cases, and how often the two
    agree;
  * the wall time and verdict of each pathological input.

Data is read in place from ``<data-dir>/<set>/test.jsonl`` (default
``../shared/data`` relative to the repository root); nothing is copied.

    python benchmarks/bench_verify.py [--data-dir DIR] [--workers 2] [--limit N] [--set math500|minerva_math|both]
                                      [--baseline DIR] [--rounds 2]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

import harness.verify as current_verify  # noqa: E402
from harness.verify import Verifier, _match_brace, extract_answer, verifier_config  # noqa: E402

PATHOLOGICAL = [
    ("power tower 9^{9^{9^{9}}}", "5", "\\boxed{9^{9^{9^{9}}}}"),
    ("power tower 10^{10^{10}}", "5", "\\boxed{10^{10^{10}}}"),
    ("huge factorial 100000!", "5", "\\boxed{100000!}"),
    ("harmonic sum over 10^6 terms", "5", "\\boxed{\\sum_{k=1}^{1000000} \\frac{1}{k}}"),
    ("3000 nested parentheses", "5", "\\boxed{" + "(" * 3000 + "5" + ")" * 3000 + "}"),
    ("3000 nested braces", "5", "\\boxed{" + "{" * 3000 + "5" + "}" * 3000 + "}"),
    ("200 KB response, answer at the end", "5", "x = 1. " * 28_000 + "\\boxed{5}"),
    ("200 KB boxed answer", "5", "\\boxed{" + "1+" * 100_000 + "1}"),
    ("200 KB of unbalanced braces", "5", "\\boxed{" + "{" * 200_000),
    ("control characters", "5", "\x00\x01\x02\\boxed{5\x07\x1b}\x7f"),
    ("unbalanced braces in the box", "5", "\\boxed{\\frac{1}{2}"),
    ("different rational functions (was a timeout: sympy's simplify)", "\\frac{(x+1)^{30}(y+2)^{30}}{(x-y)^{20}}",
     "\\boxed{\\frac{(x+2)^{30}(y+1)^{30}}{(x+y)^{20}}}"),
    ("(a+b+c+d+e+f)^{80} vs ^{81} (was a timeout: multinomial expansion)", "(a+b+c+d+e+f)^{80}",
     "\\boxed{(a+b+c+d+e+f)^{81}}"),
    ("equal, but only expansion shows it (hits the timeout)", "(a+b+c+d+e+f)^{80}",
     "\\boxed{(a+b+c+d+e+f)^{79}(a+b+c+d+e)+(a+b+c+d+e+f)^{79}f}"),
]


def _perturb(answer: str) -> str:
    """A wrong answer of the same shape: bump the first integer, or append +1."""
    m = re.search(r"\d+", answer)
    if m is None:
        return answer + "+1"
    return answer[: m.start()] + str(int(m.group(0)) + 1) + answer[m.end() :]


def _with_wrong_box(solution: str) -> str:
    pos = solution.rfind("\\boxed{")
    end = _match_brace(solution, pos + len("\\boxed")) if pos >= 0 else None
    if end is None:
        return solution + " \\boxed{0}"
    content = solution[pos + len("\\boxed{") : end]
    return solution[: pos + len("\\boxed{")] + _perturb(content) + solution[end:]


def load_cases(data_dir: str, limit: int | None, which: str = "math500") -> list[dict]:
    """Per problem: the reference solution (correct) and the same solution with its
    boxed answer perturbed (wrong, and not a string any gold uses -- no cache help)."""
    cases = []
    for name in (["math500", "minerva_math"] if which == "both" else [which]):
        path = os.path.join(data_dir, name, "test.jsonl")
        with open(path, encoding="utf-8") as fh:
            rows = [json.loads(line) for line in fh if line.strip()]
        if limit:
            rows = rows[:limit]
        for r in rows:
            if name == "math500":
                pid, gold = r["unique_id"], r["answer"]
            else:
                pid, gold = f"minerva/{r['idx']}", extract_answer(r["solution"])
                if gold is None:
                    continue
            cases.append({"id": f"{pid}#ref", "gold": gold, "pred": r["solution"]})
            cases.append({"id": f"{pid}#wrong", "gold": gold, "pred": _with_wrong_box(r["solution"])})
    return cases


def load_verifier(root: str | None):
    """``harness.verify`` of this checkout, or (``root``) the version under ``root/harness/verify`` loaded
    under another module name; its workers import it from ``root`` (its own ``_PKG_ROOT``)."""
    if root is None:
        return current_verify
    pkg = os.path.join(os.path.abspath(root), "harness", "verify")
    name = "_baseline_harness_verify"
    spec = importlib.util.spec_from_file_location(name, os.path.join(pkg, "__init__.py"),
                                                  submodule_search_locations=[pkg])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    if os.path.abspath(mod._PKG_ROOT) != os.path.abspath(root):
        raise SystemExit(f"--baseline {root}: its workers would import from {mod._PKG_ROOT}")
    return mod


def _cpu_seconds(pid: int) -> float | None:
    """utime+stime of a process from /proc (Linux); None elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _children_cpu() -> float:
    t = os.times()
    return t.children_user + t.children_system


def bench_verifier(cases: list[dict], workers: int, timeout: float, module=current_verify):
    """(start-up s, timed s, verdicts, worker CPU s of the timed cases or None, worker CPU s of the whole pool's
    life incl. start-up/warm-up/replacements, from the exited children's rusage)."""
    c_start = _children_cpu()
    t0 = time.perf_counter()
    with module.Verifier(workers=workers, timeout=timeout) as v:
        v.verify_many([{"id": f"warm{i}", "gold": "1", "pred": "\\boxed{1}"} for i in range(workers * 4)])
        startup = time.perf_counter() - t0
        pids = v.worker_pids()
        cpu0 = [_cpu_seconds(p) for p in pids]
        t1 = time.perf_counter()
        verdicts = v.verify_many(cases)
        elapsed = time.perf_counter() - t1
        cpu1 = [_cpu_seconds(p) for p in pids]
        same_workers = v.worker_pids() == pids
    cpu = None
    if same_workers and None not in cpu0 + cpu1:
        cpu = [b - a for a, b in zip(cpu0, cpu1)]
    return startup, elapsed, verdicts, cpu, _children_cpu() - c_start


def bench_math_verify_warm(parse, verify) -> None:
    """Give math-verify the same generic warm-up the harness workers get."""
    from harness.verify import _WARM_UP_PAIRS

    for gold, response in _WARM_UP_PAIRS:
        verify(parse(f"${gold}$"), parse(response))


def bench_math_verify(cases: list[dict]) -> tuple[float, float, list[bool]]:
    import logging

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    from math_verify import parse, verify

    bench_math_verify_warm(parse, verify)
    out = []
    c0 = time.process_time()
    t0 = time.perf_counter()
    for c in cases:
        gold = parse(c["gold"] if "$" in c["gold"] else f"${c['gold']}$")
        pred = parse(c["pred"])
        out.append(bool(verify(gold, pred)))
    return time.perf_counter() - t0, time.process_time() - c0, out


def _report(label: str, cases: list[dict], runs: list[tuple]) -> None:
    elapsed = sum(r[1] for r in runs)
    verdicts = runs[-1][2]
    n_correct = sum(v.correct for v in verdicts)
    statuses: dict[str, int] = {}
    for v in verdicts:
        statuses[v.status] = statuses.get(v.status, 0) + 1
    n = len(cases) * len(runs)
    print(
        f"{label}: {n / elapsed:8.1f} cases/s wall clock ({elapsed:.2f} s for {len(runs)} x {len(cases)}; "
        f"worker start-up not included); correct={n_correct} statuses={statuses}"
    )
    cpus = [r[3] for r in runs if r[3]]
    if cpus:
        total = sum(sum(c) for c in cpus)
        print(f"  worker CPU seconds on the cases {total:.2f} ({len(cpus)} run(s) without a replaced worker) -> "
              f"{len(cases) * len(cpus) / total:.1f} cases per CPU-second")
    life = sum(r[4] for r in runs)
    print(f"  worker CPU seconds over the pools' whole life (start-up, warm-up, replacements) {life:.2f} -> "
          f"{n / life:.1f} cases per CPU-second")
    slow = [c["id"] for c, v in zip(cases, verdicts) if v.status == "timeout"]
    if slow:
        print(f"  timeouts: {', '.join(slow)}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=os.path.join(REPO_ROOT, "..", "shared", "data"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=5.0)
    ap.add_argument("--limit", type=int, default=None, help="use only the first N problems")
    ap.add_argument("--set", dest="which", choices=["math500", "minerva_math", "both"], default="math500")
    ap.add_argument("--baseline", default=None, help="also time the verifier under DIR/harness/verify")
    ap.add_argument("--rounds", type=int, default=1, help="timed rounds per verifier (interleaved)")
    ap.add_argument("--skip-math-verify", action="store_true", help="skip the math-verify baseline")
    args = ap.parse_args(argv)

    cases = load_cases(os.path.abspath(args.data_dir), args.limit, args.which)
    print(f"config: {json.dumps(verifier_config(timeout=args.timeout))}")
    print(f"cases: {len(cases)} ({args.which} problems x [reference solution, same with a perturbed boxed answer])")

    try:
        load = "load average %.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        load = "load average unknown"
    print(f"machine: {os.cpu_count()} CPUs, {load} before the run")

    baseline = load_verifier(args.baseline) if args.baseline else None
    runs: dict[str, list] = {"current": [], "baseline": []}
    for _ in range(max(1, args.rounds)):
        if baseline is not None:
            runs["baseline"].append(bench_verifier(cases, args.workers, args.timeout, baseline))
        runs["current"].append(bench_verifier(cases, args.workers, args.timeout))
    if baseline is not None:
        _report(f"baseline {args.baseline} Verifier(workers={args.workers})", cases, runs["baseline"])
    _report(f"harness.verify Verifier(workers={args.workers})", cases, runs["current"])
    verdicts = runs["current"][-1][2]
    if baseline is not None:
        diffs = [(c, b, v) for c, b, v in zip(cases, runs["baseline"][-1][2], verdicts)
                 if (b.correct, b.status) != (v.correct, v.status)]
        print(f"verdicts that differ from the baseline: {len(diffs)}")
        for c, b, v in diffs:
            print(f"  {c['id']}: gold {c['gold']!r} extracted {v.extracted!r}: baseline {b.correct} ({b.status}) "
                  f"-> {v.correct} ({v.status})")

    if not args.skip_math_verify:
        mv_elapsed, mv_cpu, mv_out = bench_math_verify(cases)
        agree = sum(bool(a) == v.correct for a, v in zip(mv_out, verdicts))
        print(
            f"math-verify single process:        {len(cases) / mv_elapsed:8.1f} cases/s wall clock "
            f"({mv_elapsed:.2f} s, {len(cases) / mv_cpu:.1f} cases per CPU-second); correct={sum(mv_out)}; "
            f"agrees with harness.verify on {agree}/{len(cases)}"
        )

    print(f"pathological inputs (gold, response) via Verifier(workers=1, timeout={args.timeout}):")
    with Verifier(workers=1, timeout=args.timeout) as v:
        v.verify_many([{"id": "warm", "gold": "1", "pred": "\\boxed{1}"}])
        for name, gold, pred in PATHOLOGICAL:
            t0 = time.perf_counter()
            (res,) = v.verify_many([{"id": name, "gold": gold, "pred": pred}])
            dt = time.perf_counter() - t0
            print(f"  {dt:7.3f} s  correct={res.correct!s:5}  status={res.status:10}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
