"""Representation geometry of one checkpoint (``rep_geometry``, arXiv 2509.23024): RankMe and alpha-ReQ of the
final-layer, last-token representations of a fixed probe set, written as an ``analysis_result``.

Representations: the probe prompts are the job's held-out prompts (the first ``probe_size`` rows of the held-out
split, in the split's fixed order; tokenised as the evaluations do, without special tokens). Each is run through
the model's backbone (``model.base_model``) and ``X[i]`` is the backbone's ``last_hidden_state`` at the prompt's
last token: the final layer after the final norm, i.e. the vector the LM head reads for the first answer token.
Batches are left-padded with position ids from the attention mask, so a prompt's row does not depend on its
batch (checked by the tests against one prompt per forward). ``X`` is taken in float64 for the spectra.

- **RankMe** (Garrido, Balestriero, Najman, LeCun 2023, "RankMe: Assessing the downstream performance of
  pretrained self-supervised representations by their rank", ICML 2023, eq. 1): with singular values
  ``sigma_k`` of ``X`` (centred or not: the protocol's ``centring``),
  ``p_k = sigma_k / ||sigma||_1 + eps`` and ``RankMe = exp(-sum_k p_k log p_k)``, ``eps = 1e-7`` (the paper's
  constant). It lies in ``[~1, min(N, d)]``: ~1 for a rank-1 ``X``, ``min(N, d)`` for equal singular values.
- **alpha-ReQ** (Agrawal, Mondal, Ghosh, Richards 2022, "alpha-ReQ: Assessing representation quality in
  self-supervised learning by measuring eigenspectrum decay", NeurIPS 2022): the eigenvalues ``lambda_k`` of
  ``cov(X)`` (always centred, ``1/(N-1)``), in descending order, are fitted by ``lambda_k ~ c k^-alpha`` with least
  squares of ``log lambda_k`` on ``log k`` over the ranks ``k = first_rank .. floor(last_fraction * r)``,
  ``r = min(N - 1, d)`` (the rank a centred ``N x d`` matrix can have): by default the top half of the spectrum,
  leaving out the finite-sample tail that bends down near rank ``r``. ``alpha`` is minus the slope; the fit's R^2
  is recorded with it.

Both numbers depend on the probe size (the rank is capped by ``N``) and on centring (the rep_geometry card's
pitfall): both are fields of the protocol, which is hashed into the result like the held-out protocol; results
are comparable only at equal protocol hashes.

The result is an ``analysis_result`` (:mod:`harness.analyze.record`): ``settings`` is the protocol above (so the
``protocol_hash`` covers probe digest, size, layer, centring, eps and fit range), ``source`` names the checkpoint
(method, seed, tier, job_key; ``method: base`` for the untrained model), ``result`` holds ``rankme``,
``alpha_req``, ``alpha_req_r2``, the model's file digests (``model_sha256``), the job's hashes and both spectra.

Command line: one checkpoint (the DAG runs it per checkpoint), then one card's file from those (``collect``: the
per-checkpoint records under ``result.checkpoints``, their content hashes as ``inputs``, one protocol enforced)::

    python -m harness.analyze.geometry --job JOB/job.json --model-dir JOB/model --out FILE \\
        [--probe-size 256] [--centring mean] [--source method=grpo,seed=42,tier=...,job_key=...]
    python -m harness.analyze.geometry collect FILE... --out WORK/analysis/<paper>/<tier>/geometry.json \\
        --source paper=P,tier=T
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Mapping

import numpy as np

ANALYSIS = "geometry"
PROTOCOL_VERSION = 1
RANKME_EPS = 1e-7                  # Garrido et al. 2023, eq. 1
CENTRINGS = ("mean", "none")       # RankMe's X: rows minus their mean, or X as is (cov(X) is always centred)
DEFAULT_PROBE_SIZE = 256           # rep_geometry card: "a few hundred fixed prompts"; >= the smoke hidden size 128
DEFAULT_CENTRING = "mean"
DEFAULT_FIRST_RANK = 1
DEFAULT_LAST_FRACTION = 0.5
DEFAULT_BATCH_SIZE = 32
MIN_FIT_POINTS = 3
#: eigenvalues of cov(X) at or below this share of the largest count as 0 (singular values below ~1e-7 of the
#: largest: float32 representations carry nothing there), and may not enter the alpha-ReQ fit
EIGEN_RTOL = 1e-14


# ------------------------------------------------------------------------------------------------ measures ------
def _matrix(x) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] < 2 or a.shape[1] < 1:
        raise ValueError(f"representations must be an (N >= 2, d >= 1) matrix, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError("representations must be finite (NaN or inf found)")
    return a


def _centre(a: np.ndarray, centring: str) -> np.ndarray:
    if centring not in CENTRINGS:
        raise ValueError(f"unknown centring {centring!r}; valid: {', '.join(CENTRINGS)}")
    return a - a.mean(axis=0, keepdims=True) if centring == "mean" else a


def singular_values(x, *, centring: str = DEFAULT_CENTRING) -> np.ndarray:
    """Singular values (descending, float64) of ``X`` after ``centring``."""
    return np.linalg.svd(_centre(_matrix(x), centring), compute_uv=False)


def rankme_from_singular_values(s, *, eps: float = RANKME_EPS) -> float:
    """``exp(-sum p_k log p_k)``, ``p_k = s_k / sum(s) + eps`` (Garrido et al. 2023, eq. 1)."""
    s = np.asarray(s, dtype=np.float64)
    if s.ndim != 1 or s.size == 0 or (s < 0).any() or not np.isfinite(s).all():
        raise ValueError("singular values must be a non-empty vector of finite values >= 0")
    total = s.sum()
    if total <= 0:
        raise ValueError("RankMe of a zero matrix is undefined (all singular values are 0)")
    if eps < 0:
        raise ValueError(f"RankMe eps must be >= 0, got {eps}")
    p = s / total + eps
    p = p[p > 0]  # 0 log 0 = 0 (only reachable with eps = 0)
    return float(math.exp(-(p * np.log(p)).sum()))


def rankme(x, *, centring: str = DEFAULT_CENTRING, eps: float = RANKME_EPS) -> float:
    """RankMe of the representations ``X`` (N, d)."""
    return rankme_from_singular_values(singular_values(x, centring=centring), eps=eps)


def cov_eigenvalues(x) -> np.ndarray:
    """Eigenvalues of ``cov(X)`` (centred, 1/(N-1)), descending: ``sigma_k^2 / (N-1)`` of the centred ``X``."""
    a = _matrix(x)
    return singular_values(a, centring="mean") ** 2 / (a.shape[0] - 1)


def fit_ranks(n: int, d: int, *, first_rank: int = DEFAULT_FIRST_RANK,
              last_fraction: float = DEFAULT_LAST_FRACTION) -> tuple[int, int]:
    """The 1-based inclusive rank range of the alpha-ReQ fit for ``N`` probes of dimension ``d``."""
    r = min(int(n) - 1, int(d))
    if not 0 < float(last_fraction) <= 1:
        raise ValueError(f"alpha-ReQ last_fraction must be in (0, 1], got {last_fraction}")
    last = int(math.floor(float(last_fraction) * r))
    if int(first_rank) < 1 or last - int(first_rank) + 1 < MIN_FIT_POINTS:
        raise ValueError(f"alpha-ReQ fit range [{first_rank}, {last}] (first_rank, floor(last_fraction * "
                         f"min(N-1, d)) with N={n}, d={d}) has fewer than {MIN_FIT_POINTS} ranks; use more probes, "
                         "a lower first_rank or a larger last_fraction")
    return int(first_rank), last


def alpha_req_from_eigenvalues(eigenvalues, first_rank: int, last_rank: int) -> dict:
    """Power-law fit ``lambda_k ~ c k^-alpha`` over ranks ``first_rank..last_rank`` (1-based, inclusive) of the
    descending eigenvalues: ``{"alpha", "r2", "log_c", "ranks"}``."""
    lam = np.sort(np.asarray(eigenvalues, dtype=np.float64))[::-1]
    if first_rank < 1 or last_rank > lam.size or last_rank - first_rank + 1 < MIN_FIT_POINTS:
        raise ValueError(f"alpha-ReQ fit ranks [{first_rank}, {last_rank}] must lie in 1..{lam.size} and hold >= "
                         f"{MIN_FIT_POINTS} ranks")
    sel = lam[first_rank - 1:last_rank]
    nonzero = sel > EIGEN_RTOL * max(float(lam[0]), 0.0)
    if not nonzero.all():
        k = first_rank + int(np.argmin(nonzero))
        raise ValueError(f"alpha-ReQ: eigenvalue of rank {k} is {sel[k - first_rank]:.3g} (<= {EIGEN_RTOL:g} "
                         f"x the largest: numerically 0): the representations have rank < {last_rank}; lower the "
                         "fit's last_fraction or add probes")
    lx = np.log(np.arange(first_rank, last_rank + 1, dtype=np.float64))
    ly = np.log(sel)
    slope, intercept = np.polyfit(lx, ly, 1)
    resid = ly - (slope * lx + intercept)
    ss_tot = float(((ly - ly.mean()) ** 2).sum())
    r2 = 1.0 - float((resid ** 2).sum()) / ss_tot if ss_tot > 0 else 1.0
    return {"alpha": float(-slope), "r2": r2, "log_c": float(intercept), "ranks": [int(first_rank), int(last_rank)]}


def alpha_req(x, *, first_rank: int = DEFAULT_FIRST_RANK, last_fraction: float = DEFAULT_LAST_FRACTION) -> dict:
    """alpha-ReQ of the representations ``X`` (N, d): :func:`alpha_req_from_eigenvalues` over :func:`fit_ranks`."""
    a = _matrix(x)
    first, last = fit_ranks(a.shape[0], a.shape[1], first_rank=first_rank, last_fraction=last_fraction)
    return alpha_req_from_eigenvalues(cov_eigenvalues(a), first, last)


# --------------------------------------------------------------------------------------------- protocol ------
def geometry_protocol(*, probe_rows: list, probe_size: int, job: Mapping, centring: str = DEFAULT_CENTRING,
                      batch_size: int = DEFAULT_BATCH_SIZE, first_rank: int = DEFAULT_FIRST_RANK,
                      last_fraction: float = DEFAULT_LAST_FRACTION, chat_template: str | None = None) -> dict:
    """Everything besides the model that decides the two numbers (hashed into the result)."""
    from harness.results import canonical_json, content_hash
    from harness.results.protocol import text_sha256

    if centring not in CENTRINGS:
        raise ValueError(f"unknown centring {centring!r}; valid: {', '.join(CENTRINGS)}")
    data = job.get("data") or {}
    fields = {
        "protocol_version": PROTOCOL_VERSION, "analysis": ANALYSIS,
        "probe": {"source": "held-out split, first probe_size rows in the split's order",
                  "probe_size": int(probe_size), "prompts_sha256": content_hash([r["prompt"] for r in probe_rows]),
                  "task": data.get("task"), "split_seed": data.get("split_seed"), "n_val": data.get("n_val"),
                  "val": data.get("val"), "chat_template_sha256": text_sha256(chat_template),
                  "tokenisation": "add_special_tokens=False, left padding, position ids from the attention mask"},
        "representation": {"layer": "backbone last_hidden_state (final layer after the final norm)",
                           "token": "last prompt token", "forward_dtype": "model dtype", "spectrum_dtype": "float64",
                           "batch_size": int(batch_size)},
        "rankme": {"centring": centring, "eps": RANKME_EPS, "source": "Garrido et al. 2023, eq. 1"},
        "alpha_req": {"matrix": "cov(X), centred, 1/(N-1)", "fit": "least squares log lambda_k on log k",
                      "first_rank": int(first_rank), "last_fraction": float(last_fraction),
                      "last_rank": "floor(last_fraction * min(N-1, d))", "zero_below": EIGEN_RTOL,
                      "source": "Agrawal et al. 2022"},
    }
    return json.loads(canonical_json(fields))


def model_digest(model_dir) -> dict:
    """sha256 of every file of a checkpoint directory (hidden files excluded) and the digest of that table."""
    from harness.results import content_hash, file_sha256

    root = Path(model_dir)
    if not root.is_dir():
        from harness.config import ConfigError

        raise ConfigError(f"model directory {root} does not exist")
    files = {p.relative_to(root).as_posix(): file_sha256(p) for p in sorted(root.rglob("*"))
             if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)}
    return {"sha256": content_hash(files), "files": files}


# ---------------------------------------------------------------------------------------------- forward ------
def last_token_states(model, tok, prompts: list[str], *, batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
    """(N, d) float64: the backbone's last hidden state at each prompt's last token."""
    import torch

    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    backbone = model.base_model
    rows = []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for i in range(0, len(prompts), int(batch_size)):
            enc = tok(prompts[i:i + int(batch_size)], return_tensors="pt", padding=True, padding_side="left",
                      add_special_tokens=False)
            mask = enc["attention_mask"]
            if (mask.sum(1) == 0).any():
                raise ValueError("a probe prompt tokenises to no tokens")
            pos = (mask.cumsum(1) - 1).clamp(min=0)
            out = backbone(input_ids=enc["input_ids"], attention_mask=mask, position_ids=pos)
            rows.append(out.last_hidden_state[:, -1, :].double().cpu().numpy())
    model.train(was_training)
    return np.concatenate(rows, axis=0)


# ------------------------------------------------------------------------------------------- the result ------
def analyze_geometry_job(job, model_dir, *, out, probe_size: int = DEFAULT_PROBE_SIZE, data_dir=".",
                         centring: str = DEFAULT_CENTRING, batch_size: int = DEFAULT_BATCH_SIZE,
                         first_rank: int = DEFAULT_FIRST_RANK, last_fraction: float = DEFAULT_LAST_FRACTION,
                         source: dict | None = None, threads: int = 1) -> dict:
    """RankMe and alpha-ReQ of one checkpoint on the job's probe set: an ``analysis_result``
    (:mod:`harness.analyze.record`; ``settings`` = the protocol, so ``protocol_hash`` covers it), written atomically
    and content-hashed when ``out`` is given; returns it as written."""
    import torch

    from harness.analyze.record import analysis_record, write_analysis
    from harness.config import ConfigError
    from harness.data.load import load_model_and_data
    from harness.evaluate.heldout import check_job
    from harness.evaluate.record import seconds
    from harness.results import content_hash

    t0 = time.time()
    job = check_job(job)
    if centring not in CENTRINGS:
        raise ConfigError(f"unknown centring {centring!r}; valid: {', '.join(CENTRINGS)}")
    if int(probe_size) < 2:
        raise ConfigError(f"probe size must be >= 2, got {probe_size}")
    digest = model_digest(model_dir)
    torch.set_num_threads(int(threads))
    model, tok, _train, val_rows, _reward, _score = load_model_and_data(job, Path(model_dir), Path(data_dir))
    if int(probe_size) > len(val_rows):
        raise ConfigError(f"probe size {probe_size} exceeds the job's {len(val_rows)} held-out prompts; valid: "
                          f"2..{len(val_rows)}")
    probe = val_rows[: int(probe_size)]
    x = last_token_states(model, tok, [r["prompt"] for r in probe], batch_size=batch_size)
    try:
        first, last = fit_ranks(x.shape[0], x.shape[1], first_rank=first_rank, last_fraction=last_fraction)
        fit = alpha_req_from_eigenvalues(cov_eigenvalues(x), first, last)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    sv = singular_values(x, centring=centring)
    proto = geometry_protocol(probe_rows=probe, probe_size=probe_size, job=job, centring=centring,
                              batch_size=batch_size, first_rank=first_rank, last_fraction=last_fraction,
                              chat_template=getattr(tok, "chat_template", None))
    if source is None:
        source = {"method": "base", **({"tier": job["tier"]} if job.get("tier") else {})}
    result = {
        "rankme": rankme_from_singular_values(sv), "alpha_req": fit["alpha"], "alpha_req_r2": fit["r2"],
        "model_sha256": digest["sha256"], "model_files": digest["files"], "model_dir": str(Path(model_dir).resolve()),
        "job": {"job_sha256": content_hash(job), "config_hash": job.get("config_hash"), "job_key": job.get("job_key")},
        "representations": {"n_probes": int(x.shape[0]), "hidden_size": int(x.shape[1]),
                            "max_rank": int(min(x.shape[0] - (centring == "mean"), x.shape[1]))},
        "spectrum": {"singular_values": [float(v) for v in sv],
                     "cov_eigenvalues": [float(v) for v in cov_eigenvalues(x)],
                     "alpha_fit": {"ranks": fit["ranks"], "log_c": fit["log_c"]}},
    }
    record = analysis_record(ANALYSIS, proto, result, source=dict(source), wall_seconds=seconds(t0))
    return record if out is None else write_analysis(record, out)


def collect(paths, out, *, source: dict | None = None) -> dict:
    """One card's geometry file (``WORK/analysis/<paper>/<tier>/geometry.json``) from per-checkpoint analyses: the
    records under ``result.checkpoints`` (ordered by method, seed), their content hashes as ``inputs``; all must
    share one protocol (else ConfigError naming the differing fields)."""
    from harness.analyze.record import analysis_record, read_analyses, write_analysis
    from harness.config import ConfigError
    from harness.results.protocol import diff_fields

    recs = read_analyses(paths, ANALYSIS)
    if not recs:
        raise ConfigError("collect: no geometry analyses given")
    for p, r in zip(paths, recs):
        if r["protocol_hash"] != recs[0]["protocol_hash"]:
            raise ConfigError(f"{p}: another protocol than {paths[0]} "
                              f"({', '.join(diff_fields(recs[0]['settings'], r['settings']))})")
    recs.sort(key=lambda r: (r["source"].get("method") != "base", str(r["source"].get("method")),
                             int(r["source"].get("seed", -1))))
    record = analysis_record(ANALYSIS, recs[0]["settings"], {"checkpoints": recs},
                             inputs=[r["content_hash"] for r in recs], source=source or {})
    return write_analysis(record, out)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from harness.config import ConfigError

    if argv[:1] == ["collect"]:
        from harness.analyze.record import parse_source as parse_card_source

        c = argparse.ArgumentParser(prog="python -m harness.analyze.geometry collect",
                                    description="one card's geometry file from per-checkpoint analyses")
        c.add_argument("inputs", nargs="+", help="per-checkpoint analysis results")
        c.add_argument("--out", required=True)
        c.add_argument("--source", default=None, help="paper=P,tier=T")
        a = c.parse_args(argv[1:])
        try:
            r = collect(a.inputs, a.out, source=parse_card_source(a.source))
        except (ConfigError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"geometry: {len(r['result']['checkpoints'])} checkpoints -> {a.out}")
        return 0
    from harness.analyze.cardargs import checkpoint_parser

    p = checkpoint_parser(ANALYSIS, __doc__)
    p.epilog = "python -m harness.analyze.geometry collect IN... --out FILE: one card's file"
    p.add_argument("--probe-size", type=int, default=DEFAULT_PROBE_SIZE, help="first N held-out prompts")
    p.add_argument("--centring", default=DEFAULT_CENTRING, help=f"RankMe's centring: {' | '.join(CENTRINGS)}")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="prompts per forward")
    a = p.parse_args(argv)
    from harness.evaluate.record import parse_source

    try:
        r = analyze_geometry_job(a.job, a.model_dir, out=a.out, probe_size=a.probe_size, data_dir=a.data_dir,
                                 centring=a.centring, batch_size=a.batch_size, source=parse_source(a.source),
                                 threads=a.threads)
    except (ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    m = r["result"]
    print(f"geometry N={m['representations']['n_probes']} d={m['representations']['hidden_size']} "
          f"rankme={m['rankme']:.3f} alpha_req={m['alpha_req']:.3f} (R^2 {m['alpha_req_r2']:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
