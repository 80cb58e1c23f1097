"""Per-paper claim checks, one file per paper (discovered by :mod:`harness.claims.registry`)."""
