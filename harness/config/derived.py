"""Derived tiers: a tier a card gets from another of its tiers plus one shared overlay file.

``smoke-reasoning`` is the smoke tier on the reasoning task (issue 11): every card with a ``smoke`` tier has it,
built from that block with the overlay ``config/tiers/smoke-reasoning.yaml`` applied (the task's model,
pre-training, data, evaluation and the TRL lengths live there, once for all cards), then the card's own
``tiers.smoke-reasoning`` block, if any, for what differs in that card. Merge rule, per block: ``seeds``, ``model``,
``pretrain``, ``data`` and ``eval`` are replaced by the overlay's when it states them (they define the task and
its base model); ``trl``, ``methods`` (per method) and ``resources`` are merged key by key, and ``upstream``
(a method's upstream inputs, :mod:`harness.plan`) method by method: a card's block replaces a method's inputs whole.
``trains`` (the methods a tier trains) belongs to the tier that states it: the derived tier does not inherit it.

``smoke-agent`` is an overlaid tier: no source tier; ``config/tiers/smoke-agent.yaml`` (the household task's model,
pre-training, data, evaluation and TRL settings) with the card's ``tiers.smoke-agent`` block merged on top by the
same rule. Agent cards list it instead of ``smoke``.
"""
from __future__ import annotations

import copy
from pathlib import Path

#: derived tier -> the tier it starts from
DERIVED = {"smoke-reasoning": "smoke"}
#: tiers defined by their overlay file alone: a card that lists one (its block states only what differs) gets the
#: overlay with the card's block merged on top (``smoke-agent``: the household task, issue 14)
OVERLAID = ("smoke-agent",)
REPLACED = ("seeds", "model", "pretrain", "data", "eval", "benchmarks")
#: keys of a source tier's block that its derived tier does not inherit
NOT_INHERITED = ("trains",)


def overlay_path(root: Path, tier: str) -> Path:
    return root / "config" / "tiers" / f"{tier}.yaml"


def merge_tier(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if k in REPLACED or k not in out or not isinstance(v, dict):
            out[k] = copy.deepcopy(v)
        elif k == "methods":
            for m, hp in v.items():
                out[k][m] = {**out[k].get(m, {}), **hp}
        else:
            out[k] = {**out[k], **v}
    return out


def derive_tiers(tiers: dict, root: Path, load_yaml) -> dict:
    """The card's tiers with every derived tier whose source tier the card has."""
    out = {}
    for name, block in tiers.items():
        if name in DERIVED:
            continue
        if name in OVERLAID:
            out[name] = merge_tier(load_yaml(overlay_path(root, name)) or {}, block or {})
            continue
        out[name] = block
        for tier, source in DERIVED.items():
            if source == name:  # listed right after the tier it derives from
                shared = load_yaml(overlay_path(root, tier)) or {}
                inherited = {k: v for k, v in (block or {}).items() if k not in NOT_INHERITED}
                out[tier] = merge_tier(merge_tier(inherited, shared), tiers.get(tier) or {})
    return out
