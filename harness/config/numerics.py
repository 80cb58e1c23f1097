"""Portable CPU numerics: a CPU job gives the same bits on x86-64 machines of different instruction sets.

PyTorch picks its CPU kernels by the machine's instruction set: ATen's vectorised kernels (AVX2 or AVX-512), MKL's
BLAS code path, oneDNN's ISA. The kernels round differently. Measured on an AMD EPYC with AVX-512 (session 11): the
smoke-reasoning GRPO job ``5f68ec497bdd`` (seed 42) logs a step-3 entropy of 0.1318756341934204 with ATen's AVX-512
kernels and 0.1318756490945816 with its AVX2 ones. Sampled trajectories then diverge, and held-out accuracy moved by
up to 0.027 over 100 steps.

:func:`apply` sets ``ATEN_CPU_CAPABILITY=avx2`` (unless the environment sets it) before the first tensor
operation, and holds NumPy at AVX2 too (below). ATen then uses its AVX2 kernels, which are the same instructions on every x86-64 CPU with AVX2 (2013 and
later). With this one variable, the 100-step run retrained on the AVX-512 machine equals the pin, which was made on
another machine, bit for bit: every per-step metric, the held-out curve and the job.

NumPy dispatches its loops the same way: on an AVX-512 machine its float64 ``exp``/``log`` take AVX-512 code paths
that round differently from the AVX2 ones. Measured on the same AMD EPYC (session 13): the policy_cliff bandit
(``harness/analyze/cliff.py``, closed form, pinned on an AVX2 machine) differed from its pin in 47 numbers in the
last bit with NumPy's native loops and equalled it with ``NPY_DISABLE_CPU_FEATURES`` naming the AVX-512 groups
(NumPy 2.4's names: ``X86_V4``, ``AVX512_ICL``, ``AVX512_SPR``; naming a group the machine lacks is allowed). It
must be set before NumPy is imported, which :mod:`harness` does first.

MKL and oneDNN are left on their automatic choice, because that is what the pins were made with. Setting
``MKL_CBWR=AVX2`` as well changed the held-out entropies at 1e-8 on that AMD machine, so it broke the match. What
MKL's automatic choice does on an Intel AVX-512 CPU is not measured, because no such machine was available. A site
that trains on one may set ``MKL_CBWR`` itself (:func:`describe` lists the switches in effect). NumPy's BLAS
(OpenBLAS) picked its Haswell kernels on that AMD machine; on an Intel AVX-512 CPU it picks SkylakeX ones (not
measured); ``OPENBLAS_CORETYPE=Haswell`` is the site's switch.

Every ``python -m harness...`` and ``harness ...`` process applies it on import of the package (:mod:`harness`). It
sets nothing on other architectures. ``RLVR_CPU_NUMERICS=native`` keeps the machine's fastest kernels, and reruns
are then identical only on the same kind of CPU. ``benchmarks/bench_cpu_numerics.py`` measures the cost. GPU kernels
are not affected.
"""
from __future__ import annotations

import os
import platform
from typing import MutableMapping

#: what holds ATen's kernels and NumPy's loops at AVX2 (MKL, oneDNN, OpenBLAS: module docstring)
PORTABLE_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR"}
#: the other kernel switches a result's provenance records (set by the site, never by the harness)
RECORDED = ("MKL_CBWR", "ONEDNN_MAX_CPU_ISA", "OPENBLAS_CORETYPE")
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
    """The numerics a result was computed under: the switch and the kernel variables."""
    env = os.environ if environ is None else environ
    return {k: env.get(k) for k in (SWITCH, *PORTABLE_ENV, *RECORDED)}
