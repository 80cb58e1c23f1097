"""Analysis stages (issue 15): computations over checkpoints, runs and closed forms that check the claims of
analysis papers (no new loss). Each analysis writes a result file with the same provenance as every result
(``harness.results``: content hash, inputs' hashes, protocol), which the claims layer reads like any other file.

Modules, one per analysis: ``cliff`` (the policy cliff: exact bandit computation), ``geometry`` (RankMe and
alpha-ReQ of final-layer representations on a fixed probe set). pass@k curves live in :mod:`harness.evaluate.passk`.
"""
