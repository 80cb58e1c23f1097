"""``harness`` verbs about training data: rank a ranking run's examples (1-shot RLVR data selection)."""
from __future__ import annotations

from harness.config import ConfigError


def cmd_rank(a) -> int:
    from harness.data.selection import rank_history, read_json
    from harness.results import atomic_write_json

    try:
        r = rank_history(read_json(a.history, "train_history"), a.rule, a.seed)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    atomic_write_json(a.out, r, hashed=True)
    top = r["ranking"][: a.show]
    print(f"wrote {a.out}: {r['n_examples']} examples ranked by {a.rule}; top: "
          + ", ".join(f"#{e['index']} ({e['score']:.4f}, {e['visits']} visits)" for e in top))
    return 0
