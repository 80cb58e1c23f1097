import subprocess

import pytest

from harness.config import ConfigError, load_run_config

from harness.plan import resolve_job
from harness.methods.registry import HParam, RegistryError, get_method, register_loss


def test_unknown_method_lists_valid_ones():
    with pytest.raises(RegistryError, match=r"unknown method 'nope'; valid: .*clip_cov.*grpo.*kl_cov"):
        get_method("nope")


def test_a_label_free_reward_must_replace_the_task_reward():
    from harness.methods.registry import register_reward

    with pytest.raises(RegistryError, match="label-free reward replaces the task's"):
        register_reward("label_free_probe", paper="x", source="test", label_free=True, task_reward_weight=0.5)


def test_registering_a_name_twice_fails():
    get_method("clip_cov")  # the method modules are loaded (discovery) before registering the name again
    with pytest.raises(RegistryError, match="already registered"):
        register_loss("clip_cov", paper="x", source="y")(lambda ctx: None)


def test_unknown_hyperparameter_names_valid_ones():
    with pytest.raises(RegistryError, match="no hyperparameter 'clip_ratio'; valid: clip_cov_lb, clip_cov_ratio"):
        get_method("clip_cov").resolve({"clip_ratio": 0.1})


def test_hyperparameters_carry_units_and_sources():
    for name in ("clip_cov", "kl_cov"):
        for hp in get_method(name).hparams.values():
            assert isinstance(hp, HParam) and hp.unit and hp.source


def test_tier_overrides_are_applied_on_top_of_card_defaults():
    job = resolve_job("entropy_mechanism", "smoke", "clip_cov", 42)
    assert job["hparams"]["clip_cov_ratio"] == 0.15 and job["hparams"]["clip_cov_ub"] == 5.0
    paper = resolve_job("entropy_mechanism", "paper", "kl_cov", 42)
    assert paper["hparams"] == {"k_percent": 0.2, "ppo_kl_coef": 1.0}


def test_config_hash_changes_only_for_the_edited_job():
    a = resolve_job("entropy_mechanism", "smoke", "grpo", 42)
    b = resolve_job("entropy_mechanism", "smoke", "grpo", 42)
    c = resolve_job("entropy_mechanism", "smoke", "grpo", 7)
    assert a["config_hash"] == b["config_hash"] != c["config_hash"]


@pytest.mark.parametrize("override,needle", [
    ({"paper": "nope"}, "unknown paper 'nope'; valid: "),
    ({"tier": "huge"}, "'huge' is not one of"),
    ({"methods": ["foo"]}, "no method 'foo'; valid: grpo, clip_cov, kl_cov"),
    ({"seeed": [1]}, "unknown key 'seeed' at (top level) (did you mean 'seeds'?)"),
])
def test_bad_run_config(override, needle):
    with pytest.raises(ConfigError) as e:
        load_run_config(override)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_trl_key_typo_is_caught():
    with pytest.raises(ConfigError, match="'learning_rat' is not a TRL GRPOConfig field \\(did you mean 'learning_rate'"):
        resolve_job("entropy_mechanism", "smoke", "grpo", 1, check_trl=True, trl_overrides={"learning_rat": 1e-4})


def test_cli_methods_and_papers():
    out = subprocess.run(["harness", "methods", "-v"], capture_output=True, text=True, check=True).stdout
    for name in ("grpo", "clip_cov", "kl_cov"):
        assert name in out
    assert "k_percent = 0.2 [percent of valid tokens" in out
    out = subprocess.run(["harness", "papers"], capture_output=True, text=True, check=True).stdout
    assert "entropy_mechanism" in out and "smoke=" in out and "2505.22617" in out


def test_cli_bad_input_is_one_line_exit_2():
    p = subprocess.run(["harness", "validate", "paper=nope"], capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0 and p.stderr.startswith("error: unknown paper")


def test_readme_status_table_is_current():
    p = subprocess.run(["harness", "readme", "--check"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_jobs_are_keyed_by_content_not_by_card():
    """Identical resolved jobs of two cards share one key (trained once); the key changes with any setting and with
    a method's implementation version, never with the card that asked."""
    from harness.methods.registry import get_method

    a, b = resolve_job("bapo", "smoke", "grpo", 42), resolve_job("canon", "smoke", "grpo", 42)
    assert a == b and "paper" not in a
    assert resolve_job("bapo", "smoke", "grpo", 7)["job_key"] == a["job_key"]  # the seed is in the path, not the key
    assert resolve_job("bapo", "smoke", "grpo", 7)["config_hash"] != a["config_hash"]
    assert resolve_job("bapo", "smoke", "grpo", 42, trl_overrides={"max_steps": 3})["job_key"] != a["job_key"]
    m = get_method("grpo")
    m.version = 2
    try:
        bumped = resolve_job("bapo", "smoke", "grpo", 42)
    finally:
        m.version = 1
    assert bumped["method_version"] == 2 and bumped["job_key"] != a["job_key"]
