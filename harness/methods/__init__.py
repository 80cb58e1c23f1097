"""Built-in methods. Importing a module registers its methods; add a paper by adding one module here."""
from harness.methods import baselines, entropy_mechanism  # noqa: F401
