"""The ``--settings`` argument of an analysis command line: a JSON object, a JSON file, or ``<paper>:<tier>`` (the
card's ``tiers.<tier>.analysis.<name>`` block, with the card as the result's source): one reading for every
analysis command."""
from __future__ import annotations

import json
from pathlib import Path


def settings_arg(text: str, name: str) -> tuple[dict, dict]:
    """(settings, source) from ``--settings``; a bad value raises ValueError naming what is valid."""
    text = text.strip()
    if text.startswith("{"):
        try:
            return json.loads(text), {}
        except json.JSONDecodeError as e:
            raise ValueError(f"--settings: not valid JSON ({e.msg})") from None
    if Path(text).is_file():
        try:
            return json.loads(Path(text).read_text()), {}
        except json.JSONDecodeError as e:
            raise ValueError(f"--settings {text}: not valid JSON ({e.msg})") from None
    paper, sep, tier = text.partition(":")
    if not sep:
        raise ValueError(f"--settings {text!r}: give a JSON object, a JSON file, or <paper>:<tier>")
    from harness.config import load_card

    card = load_card(paper)
    if tier not in card["tiers"]:
        raise ValueError(f"--settings: paper {paper!r} has no tier {tier!r}; valid: {', '.join(card['tiers'])}")
    block = card["tiers"][tier].get("analysis") or {}
    if name not in block:
        raise ValueError(f"--settings: replications/{paper}/card.yaml tiers/{tier} has no analysis.{name} block "
                         f"(analyses there: {', '.join(block) or 'none'})")
    return block[name], {"paper": paper, "tier": tier}
