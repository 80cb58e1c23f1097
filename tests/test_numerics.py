"""Portable CPU numerics (harness/config/numerics.py): every harness process holds torch's CPU kernels and NumPy's
loops at AVX2, so a CPU job gives the same bits on every x86-64 machine with AVX2; `RLVR_CPU_NUMERICS=native` opts
out."""
import platform
import subprocess
import sys

import pytest

from harness.config import numerics

#: sha256 of the probe's outputs (log-softmax, entropy, gelu/tanh/sigmoid/rsqrt, seeded multinomial) per kernel
#: level, MKL on its compatible branch, recorded on an AMD EPYC (session 11). ATen's AVX2 kernels are the same
#: instructions on every AVX2 CPU, so any x86-64 machine must give the same AVX2 hash. The same machine's native
#: AVX-512 kernels give another hash, which is the point.
GOLDEN = {"AVX2": "85fc68c07c75425bbae3da4edb964c906bc25af52494bd164e58064ed3a98610",
          "DEFAULT": "1e9cf2fbc122827d6a57d13df4e87ee57d699e11e78aab31bd726afa8d9ed4eb"}
PROBE = """
import hashlib
import harness  # noqa: F401  (applies harness.config.numerics)
import torch
g = torch.Generator().manual_seed(0)
x = torch.randn(64, 278, generator=g)
lsm = torch.log_softmax(x * 1.7, -1)
ent = -(lsm.exp() * lsm).sum(-1)
y = torch.nn.functional.gelu(x).tanh().sigmoid() * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
ids = torch.multinomial(lsm.exp(), 4, replacement=True, generator=g)
h = hashlib.sha256()
for t in (lsm, ent, y, ids):
    h.update(t.contiguous().numpy().tobytes())
print(torch.backends.cpu.get_cpu_capability(), h.hexdigest())
"""
#: the same for NumPy's float64 exp/log/tanh on 4096 normals (AVX-512 loops round differently from the AVX2/libm
#: ones: the policy_cliff bandit differed from its pin in the last bit until NumPy was held at AVX2), session 13;
#: the AMD EPYC's own AVX-512 loops gave 0d37f65763288d80ccc843ff63702bfd2f66664afb518e3e4df5be3535f9c617
NUMPY_GOLDEN = {"X86_V3": "957b4cd7c5ed1e2ee4c1c495474abd6d7b4f96920a09721054e1ec92e45e9594"}
NUMPY_PROBE = """
import hashlib
import harness  # noqa: F401  (applies harness.config.numerics before NumPy is imported)
import numpy as np
from harness.results import _numpy_kernels
x = np.random.default_rng(0).normal(0, 3, 4096)
h = hashlib.sha256()
for y in (np.exp(x), np.log(np.abs(x) + 1e-3), np.exp(-np.logaddexp(0, -x)), np.tanh(x)):
    h.update(y.tobytes())
print(_numpy_kernels(), h.hexdigest())
"""
X86 = platform.machine().lower() in ("x86_64", "amd64")


def _probe(probe: str = PROBE, **env) -> tuple[str, str]:
    import os

    base = {k: v for k, v in os.environ.items() if k not in (*numerics.PORTABLE_ENV, *numerics.RECORDED,
                                                             numerics.SWITCH)}
    # MKL on its compatible branch (the same bits on every x86 CPU, by Intel's documentation): ATen's vectorised
    # functions call MKL's for some ops, and the automatic branch is the machine's (harness/config/numerics.py)
    out = subprocess.run([sys.executable, "-c", probe], env={**base, "MKL_CBWR": "COMPATIBLE", **env},
                         capture_output=True, text=True,
                         timeout=300, check=True).stdout.split()
    return out[0], out[1]


def test_apply_sets_what_is_unset_and_keeps_what_the_user_set():
    env = {"MKL_CBWR": "COMPATIBLE"}
    portable = {"ATEN_CPU_CAPABILITY": "avx2", "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR"}
    assert numerics.apply(env, machine="x86_64") == portable
    assert env == {"MKL_CBWR": "COMPATIBLE", **portable}  # MKL is the site's to set
    assert numerics.apply(env, machine="x86_64") == {}  # idempotent
    # the user's choice stays; what the user left unset is set
    assert numerics.apply({"ATEN_CPU_CAPABILITY": "avx512"}, machine="x86_64") == {
        "NPY_DISABLE_CPU_FEATURES": portable["NPY_DISABLE_CPU_FEATURES"]}
    assert numerics.describe(env) == {"RLVR_CPU_NUMERICS": None, **portable, "MKL_CBWR": "COMPATIBLE",
                                      "ONEDNN_MAX_CPU_ISA": None, "OPENBLAS_CORETYPE": None}


def test_native_and_other_architectures_set_nothing_and_a_typo_is_named():
    assert numerics.apply({"RLVR_CPU_NUMERICS": "native"}, machine="x86_64") == {}
    env: dict = {}
    assert numerics.apply(env, machine="aarch64") == {} and env == {}
    with pytest.raises(ValueError, match="RLVR_CPU_NUMERICS='fast'; valid: portable, native"):
        numerics.apply({"RLVR_CPU_NUMERICS": "fast"}, machine="x86_64")


@pytest.mark.skipif(not X86, reason="the portable kernels are x86-64's")
def test_a_harness_process_computes_with_the_avx2_kernels_bit_for_bit():
    """The same bits as on the machine that recorded GOLDEN; an opted-out process uses the machine's own kernels."""
    level, digest = _probe()
    assert level in GOLDEN, f"kernels {level}: the portable setting should give AVX2 (or DEFAULT without AVX2)"
    assert digest == GOLDEN[level], (
        f"{level} kernels gave {digest} on this {platform.processor() or platform.machine()}: the portable kernels are "
        f"not bit-identical across machines here (harness/config/numerics.py)")
    native, native_digest = _probe(RLVR_CPU_NUMERICS="native")
    if native != level:  # a machine with faster kernels than AVX2: they round differently
        assert native_digest != digest


@pytest.mark.skipif(not X86, reason="the portable kernels are x86-64's")
def test_a_harness_process_computes_numpy_with_the_avx2_loops_bit_for_bit():
    level, digest = _probe(NUMPY_PROBE)
    assert level in ("X86_V3", "X86_V2"), f"NumPy dispatches to {level}: the portable setting should cap it at X86_V3"
    if level == "X86_V3":
        assert digest == NUMPY_GOLDEN["X86_V3"], (
            f"NumPy's AVX2 loops gave {digest} on this {platform.processor() or platform.machine()} "
            "(harness/config/numerics.py)")
    native, native_digest = _probe(NUMPY_PROBE, RLVR_CPU_NUMERICS="native")
    if native == "X86_V4":  # an AVX-512 machine: its own loops round differently, which is why they are held back
        assert native_digest != digest


def test_results_record_the_kernels_they_were_computed_with():
    import torch  # noqa: F401  (a job has imported it)

    from harness.results import provenance

    hw = provenance()["hardware"]
    assert hw["cpu_kernels"] == torch.backends.cpu.get_cpu_capability()
    if X86:
        assert hw["numpy_kernels"] in ("X86_V3", "X86_V4", "X86_V2")
