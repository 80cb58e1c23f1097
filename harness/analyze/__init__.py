"""Analysis stages (issue 15): computations over checkpoints, runs and closed forms that check the claims of
analysis papers (no new loss). Each analysis writes a result file with the same provenance as every result
(``harness.results``: content hash, inputs' hashes, protocol), which the claims layer reads like any other file.

Modules, one per analysis: ``cliff`` (the policy cliff: exact bandit computation), ``geometry`` (RankMe and
alpha-ReQ of final-layer representations on a fixed probe set), ``support`` (pass@k curves with CIs, the support
shared by base and RL checkpoints, answer- vs token-level entropy), ``bon``/``bon_toy`` (best-of-N vs the KL-optimal
tilt, closed form and the memoryless toy), ``reward_kl`` (reward and KL to the base of checkpoints), ``did_drift``
(DID probes of DPO runs). pass@k samples come from
:mod:`harness.evaluate.passk`.
"""
