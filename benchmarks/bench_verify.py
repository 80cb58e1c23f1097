"""Throughput and robustness benchmark for harness.verify.

Prints
  * cases/second of ``Verifier(workers=N)`` on MATH500-style cases (each problem's
    reference solution as a correct response plus another problem's solution as
    a wrong one), with fresh workers so parse caches start cold;
  * math-verify's own single-process rate (``parse`` + ``verify`` with its
    default configs and signal timeouts) on the same cases, and how often the two
    agree;
  * the wall time and verdict of each pathological input.

Data is read in place from ``<data-dir>/math500/test.jsonl`` (default
``../shared/data`` relative to the repository root); nothing is copied.

    python benchmarks/bench_verify.py [--data-dir DIR] [--workers 2] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

from harness.verify import Verifier, _match_brace, verifier_config  # noqa: E402

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
    ("slow symbolic simplification (hits the timeout)", "\\frac{(x+1)^{30}(y+2)^{30}}{(x-y)^{20}}",
     "\\boxed{\\frac{(x+2)^{30}(y+1)^{30}}{(x+y)^{20}}}"),
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


def load_cases(data_dir: str, limit: int | None) -> list[dict]:
    """Per problem: the reference solution (correct) and the same solution with its
    boxed answer perturbed (wrong, and not a string any gold uses -- no cache help)."""
    path = os.path.join(data_dir, "math500", "test.jsonl")
    with open(path, encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    if limit:
        rows = rows[:limit]
    cases = []
    for r in rows:
        cases.append({"id": f"{r['unique_id']}#ref", "gold": r["answer"], "pred": r["solution"]})
        cases.append({"id": f"{r['unique_id']}#wrong", "gold": r["answer"], "pred": _with_wrong_box(r["solution"])})
    return cases


def _cpu_seconds(pid: int) -> float | None:
    """utime+stime of a process from /proc (Linux); None elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def bench_verifier(cases: list[dict], workers: int, timeout: float):
    t0 = time.perf_counter()
    with Verifier(workers=workers, timeout=timeout) as v:
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
    return startup, elapsed, verdicts, cpu


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=os.path.join(REPO_ROOT, "..", "shared", "data"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=5.0)
    ap.add_argument("--limit", type=int, default=None, help="use only the first N problems")
    ap.add_argument("--skip-math-verify", action="store_true", help="skip the math-verify baseline")
    args = ap.parse_args(argv)

    cases = load_cases(os.path.abspath(args.data_dir), args.limit)
    print(f"config: {json.dumps(verifier_config(timeout=args.timeout))}")
    print(f"cases: {len(cases)} ({len(cases) // 2} MATH500 problems x [reference solution, same with a perturbed boxed answer])")

    try:
        load = "load average %.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        load = "load average unknown"
    print(f"machine: {os.cpu_count()} CPUs, {load} before the run")

    startup, elapsed, verdicts, cpu = bench_verifier(cases, args.workers, args.timeout)
    n_correct = sum(v.correct for v in verdicts)
    statuses: dict[str, int] = {}
    for v in verdicts:
        statuses[v.status] = statuses.get(v.status, 0) + 1
    print(
        f"harness.verify Verifier(workers={args.workers}): {len(cases) / elapsed:8.1f} cases/s wall clock "
        f"({elapsed:.2f} s; worker start-up {startup:.2f} s not included); correct={n_correct} statuses={statuses}"
    )
    if cpu:
        busiest = max(cpu)
        print(
            f"  worker CPU seconds {', '.join(f'{c:.2f}' for c in cpu)} -> {len(cases) / busiest:.1f} cases/s "
            f"if each worker had a core to itself ({len(cases) / sum(cpu):.1f} cases per CPU-second)"
        )

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
