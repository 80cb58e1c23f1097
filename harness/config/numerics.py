"""Portable CPU numerics: a CPU job gives the same bits on every x86-64 machine with AVX2.

PyTorch picks its CPU kernels by the machine's instruction set: ATen's vectorised kernels (AVX2 or AVX-512), MKL's
BLAS code path, oneDNN's ISA. The kernels round differently. Measured on an AMD EPYC with AVX-512 (session 11): the
smoke-reasoning GRPO job ``5f68ec497bdd`` (seed 42) logs a step-3 entropy of 0.1318756341934204 with the AVX-512
kernels and 0.1318756490945816 with the AVX2 ones. Sampled trajectories then diverge, and held-out accuracy moved by
up to 0.027 over 100 steps. The pinned run (trained on a machine whose kernels were AVX2) is reproduced bit for bit
on the AVX-512 machine once ATen is held at AVX2. So a rerun is identical across machines only when every machine
uses the same kernels.

:func:`apply` holds them at the AVX2 level, which every x86-64 CPU since 2013-2015 has. It sets these variables,
where the environment does not set them already, before the first tensor operation:

- ``ATEN_CPU_CAPABILITY=avx2``: ATen's kernels. This one is measured.
- ``MKL_CBWR=AVX2``: MKL's conditional numerical reproducibility branch. It keeps an AVX-512 Intel CPU on the AVX2
  code path, the one MKL takes on AMD CPUs. On the AMD machine the results were the same with it and without it; no
  Intel AVX-512 machine was available to measure.
- ``ONEDNN_MAX_CPU_ISA=AVX2``: oneDNN's kernels (convolutions, bf16), for the same reason.

Every ``python -m harness...`` process (train, evaluate, analyse) applies it on import of the package
(:mod:`harness`). It sets nothing on other architectures. ``RLVR_CPU_NUMERICS=native`` leaves the machine's fastest
kernels (AVX-512), and reruns are then identical only on the same kind of CPU. Run
``benchmarks/bench_cpu_numerics.py`` to measure the cost. GPU kernels are not affected.
"""
from __future__ import annotations

import os
import platform
from typing import MutableMapping

#: the variables and the values that hold the kernels at AVX2
PORTABLE_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
#: ``portable`` (the default) or ``native``
SWITCH = "RLVR_CPU_NUMERICS"
CHOICES = ("portable", "native")


def apply(environ: MutableMapping[str, str] | None = None, machine: str | None = None) -> dict[str, str]:
    """Set :data:`PORTABLE_ENV` in ``environ`` (default ``os.environ``) where unset, on x86-64, unless
    ``RLVR_CPU_NUMERICS=native``. Returns the variables it set. An unknown switch value raises ValueError naming the
    choices."""
    env = os.environ if environ is None else environ
    mode = env.get(SWITCH, "portable").strip().lower() or "portable"
    if mode not in CHOICES:
        raise ValueError(f"{SWITCH}={env[SWITCH]!r}; valid: {', '.join(CHOICES)}")
    arch = (machine or platform.machine()).lower()
    if mode == "native" or arch not in ("x86_64", "amd64"):
        return {}
    done = {k: v for k, v in PORTABLE_ENV.items() if k not in env}
    env.update(done)
    return done


def describe(environ: MutableMapping[str, str] | None = None) -> dict[str, str | None]:
    """The numerics a result was computed under (its provenance): the switch and the three variables."""
    env = os.environ if environ is None else environ
    return {k: env.get(k) for k in (SWITCH, *PORTABLE_ENV)}
