"""Comparing eval results: :func:`compare` (two results, per shared benchmark, with a paired bootstrap CI of the
difference) and :func:`leaderboard` (several results on one benchmark); both refuse results evaluated under
different protocols, naming the differing fields."""
from __future__ import annotations

from typing import Mapping, Sequence

from harness.config import ConfigError
from harness.evaluate.record import RESULT_KIND
from harness.results.packing import read_result


def _load(r) -> dict:
    if isinstance(r, Mapping):
        return dict(r)
    return read_result(r, ConfigError)  # a pinned (packed) result reads as the plain one


def _bench_view(r: dict, b: str) -> dict:
    return {"protocol": r["protocol"]["benchmarks"][b], "protocol_hash": r["benchmarks"][b]["protocol_hash"]}


def compare(result_a, result_b, *, iters: int = 2000, seed: int = 0) -> dict:
    """Compare two eval results (dicts or paths) on the benchmarks they share.

    Raises :class:`harness.results.protocol.ProtocolMismatch` (naming the differing fields) if a shared benchmark was
    evaluated under different protocols, or if they share no benchmark. Returns per benchmark and metric the two
    values and ``diff = b - a``; for avg@k / greedy accuracy also a paired bootstrap CI of the difference over the
    problems both results scored.
    """
    import numpy as np

    from harness.evaluate.metrics import bootstrap_ci
    from harness.results.protocol import ProtocolMismatch, assert_same_protocol

    a, b = _load(result_a), _load(result_b)
    for r in (a, b):
        if r.get("kind") != RESULT_KIND:
            raise ProtocolMismatch(f"not an {RESULT_KIND} (kind={r.get('kind')!r})", ["kind"])
    shared = [x for x in a["benchmarks"] if x in b["benchmarks"]]
    if not shared:
        raise ProtocolMismatch(f"no benchmark in common ({sorted(a['benchmarks'])} vs {sorted(b['benchmarks'])})",
                               ["benchmarks"])
    out = {"benchmarks": {}}
    for bench in shared:
        try:
            h = assert_same_protocol([_bench_view(a, bench), _bench_view(b, bench)])
        except ProtocolMismatch as e:
            raise ProtocolMismatch(f"{bench}: {e}", e.fields) from None
        ma, mb = a["benchmarks"][bench]["metrics"], b["benchmarks"][bench]["metrics"]
        entry = {"protocol_hash": h, "metrics": {}}
        for m in ma:
            if m in mb:
                entry["metrics"][m] = {"a": ma[m]["value"], "b": mb[m]["value"],
                                       "diff": mb[m]["value"] - ma[m]["value"], "a_ci": ma[m]["ci"],
                                       "b_ci": mb[m]["ci"]}
        k = a["benchmarks"][bench]["k"]
        pa = {p["id"]: p["n_correct"] / k for p in a["benchmarks"][bench]["per_problem"]}
        pb = {p["id"]: p["n_correct"] / k for p in b["benchmarks"][bench]["per_problem"]}
        common_ids = [i for i in pa if i in pb]
        if common_ids:
            d = np.array([pb[i] - pa[i] for i in common_ids])
            key = "greedy_acc" if "greedy_acc" in ma else "avg@k"
            if key in entry["metrics"]:
                entry["metrics"][key]["paired_diff"] = float(d.mean())
                entry["metrics"][key]["paired_diff_ci"] = list(bootstrap_ci(d, iters=iters, seed=seed))
                entry["metrics"][key]["n_paired"] = len(common_ids)
        out["benchmarks"][bench] = entry
    return out


def leaderboard(results: Sequence, benchmark: str, metric: str | None = None) -> list[dict]:
    """Rows (model_dir, value, CI) of several results on one benchmark, best first; refuses mixed protocols."""
    from harness.results.protocol import assert_same_protocol

    rs = [_load(r) for r in results]
    missing = [i for i, r in enumerate(rs) if benchmark not in r.get("benchmarks", {})]
    if missing:
        raise ConfigError(f"results {missing} have no {benchmark!r}")
    assert_same_protocol([_bench_view(r, benchmark) for r in rs])
    rows = []
    for r in rs:
        ms = r["benchmarks"][benchmark]["metrics"]
        name = metric or ("greedy_acc" if "greedy_acc" in ms else "avg@k")
        rows.append({"model_dir": r.get("model_dir"), "metric": name, "value": ms[name]["value"],
                     "ci": ms[name]["ci"], "protocol_hash": r["benchmarks"][benchmark]["protocol_hash"]})
    return sorted(rows, key=lambda x: -x["value"])
