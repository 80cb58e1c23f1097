"""lm-eval tasks of the harness: ``lm_eval --include_path <this folder> --tasks math500_greedy ...``.

One folder per benchmark (``aime24``, ``aime25``, ``math500``, ``amc23``, ``minerva_math``, ``olympiadbench``), each
with a greedy variant (``<b>_greedy``: k = 1, T = 0) and sampled variants (``<b>_avg<k>``: k samples at T = 0.6,
top_p = 0.95, scored as avg@k, pass@k and maj@k through lm-eval's ``take_first_k`` filter). Shared YAML in
``_common/``; logic in :mod:`harness.evaluate.tasks.common`. :func:`harness.evaluate.lmeval.evaluate_checkpoint` derives a task
with any k / temperature / top_p / max tokens from these files.
"""
from harness.evaluate.tasks.common import (  # noqa: F401
    BENCHMARKS,
    PROMPT_TEMPLATE,
    STOP_SEQUENCES,
    TASKS_DIR,
    configure_scoring,
    doc_to_target,
    doc_to_text,
    excluded_problems,
    load,
    load_docs,
    process_results,
    process_results_greedy,
    score_responses,
    scoring_config,
    vote_key,
)
