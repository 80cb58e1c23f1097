"""rlvr-harness."""
__version__ = "0.1.0"

from harness.config import numerics as _numerics  # noqa: E402

_numerics.apply()  # the same CPU kernels on every x86-64 machine, before any tensor operation (harness.config.numerics)
