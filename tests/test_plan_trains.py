"""A tier's ``trains``: the card's methods that tier trains (default: all), never inherited by a derived tier."""
from __future__ import annotations

import pytest

import harness.plan as plan
from harness.config import ConfigError, load_card
from harness.config.derived import merge_tier


def test_a_tier_trains_only_what_it_lists_and_its_derived_tier_trains_every_method():
    card = load_card("policy_cliff")
    assert card["tiers"]["smoke"]["trains"] == ["grpo"] and "trains" not in card["tiers"]["smoke-reasoning"]
    smoke = plan.jobs({"paper": "policy_cliff", "tier": "smoke"})
    assert smoke == [("grpo", 42), ("grpo", 7)]
    reasoning = plan.jobs({"paper": "policy_cliff", "tier": "smoke-reasoning"})
    assert {m for m, _ in reasoning} == set(card["methods"]) and len(reasoning) == 3 * len(card["methods"])
    # an explicit methods= of the run configuration still wins
    assert plan.jobs({"paper": "policy_cliff", "tier": "smoke", "methods": ["cliff_p05"]}) == [
        ("cliff_p05", 42), ("cliff_p05", 7)]
    # the shared GRPO job is the same job whatever the tier lists
    assert plan.resolve_job("policy_cliff", "smoke", "grpo", 42)["job_key"] == \
        plan.resolve_job("entropy_mechanism", "smoke", "grpo", 42)["job_key"]


def test_an_unknown_method_in_trains_names_the_valid_ones(monkeypatch):
    card = load_card("policy_cliff")
    bad = {**card, "tiers": {**card["tiers"], "smoke": {**card["tiers"]["smoke"], "trains": ["grpo", "cliff_typo"]}}}
    monkeypatch.setattr(plan, "load_card", lambda paper: bad)
    with pytest.raises(ConfigError, match=r"tiers/smoke/trains: unknown method 'cliff_typo'; valid: grpo, cliff_m20"):
        plan.check_card_methods("policy_cliff")


def test_merge_keeps_trains_of_the_block_that_states_it():
    assert merge_tier({"seeds": [1]}, {"trains": ["grpo"]})["trains"] == ["grpo"]
