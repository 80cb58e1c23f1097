"""Built-in methods. Importing a module registers its methods; add a paper by adding one module here."""
from harness.methods import baselines, entropy_mechanism  # noqa: F401
from harness.methods import forking_tokens  # noqa: F401
from harness.methods import canon  # noqa: F401
from harness.methods import siren  # noqa: F401
from harness.methods import copo  # noqa: F401
from harness.methods import steer  # noqa: F401
from harness.methods import lp_reg  # noqa: F401
from harness.methods import egpo  # noqa: F401
from harness.methods import hicra  # noqa: F401
from harness.methods import bapo  # noqa: F401
from harness.methods import riskpo  # noqa: F401
from harness.methods import hapo  # noqa: F401
from harness.methods import d3s  # noqa: F401
