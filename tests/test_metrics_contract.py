"""Every method logs the metrics contract at every step (trainer.REQUIRED_METRICS)."""
from pathlib import Path

import pytest

from harness.config import ConfigError, list_papers, load_card

from harness.plan import resolve_job
from harness.methods.registry import all_methods
from harness.train.trainer import REQUIRED_METRICS

from conftest import TINY_SMOKE

#: logged by TRL only on steps that generate (every steps_per_generation * num_iterations steps)
GENERATION_STEP_METRICS = {"reward", "reward_std", "completions/mean_length", "completions/clipped_ratio"}


def _method_papers():
    pairs = {}
    for p in list_papers():
        for m in load_card(p)["methods"]:
            pairs.setdefault(m, p)
    return pairs


def test_every_paper_method_has_a_card():
    uncarded = {m for m, spec in all_methods().items() if spec.point != "config"} - set(_method_papers())
    assert not uncarded, f"methods not used by any replication card: {sorted(uncarded)}"


def _cases():
    papers = _method_papers()
    return sorted((m, papers.get(m)) for m in all_methods())


@pytest.mark.parametrize("method,paper", _cases())
def test_metrics_contract(method, paper, tiny_base, tmp_path):
    """Every registered method (card-less TRL baselines run on the entropy_mechanism smoke tier)."""
    from harness.train import job as train

    resolve = _tiny_resolve if paper else _uncarded_resolve
    job = resolve(paper or "entropy_mechanism", "smoke", method, 3, trl_overrides=TINY_SMOKE["trl_overrides"])
    r = train.run_job(job, model_dir=tiny_base, out_dir=tmp_path, data_dir=Path("."), mlflow_uri=None)
    rows = r["metrics"]
    assert [m["step"] for m in rows] == list(range(1, TINY_SMOKE["trl_overrides"]["max_steps"] + 1))
    spg = r["job"]["trl"]["steps_per_generation"]
    for row in rows:
        required = set(REQUIRED_METRICS)
        if (row["step"] - 1) % spg:
            required -= GENERATION_STEP_METRICS
        missing = required - set(row)
        assert not missing, f"{method} step {row['step']} did not log {sorted(missing)}"
    assert r["heldout"][0]["step"] == 0 and r["heldout"][-1]["step"] == TINY_SMOKE["trl_overrides"]["max_steps"]
    assert (tmp_path / "result.json").exists() and (tmp_path / "metrics.jsonl").exists()


def _tiny_resolve(paper, tier, method, seed, **kw):
    job = resolve_job(paper, tier, method, seed, **kw)
    job["eval"] = TINY_SMOKE["eval"]
    return job


def _uncarded_resolve(paper, tier, method, seed, **kw):
    from harness.methods.registry import get_method

    job = _tiny_resolve(paper, tier, "grpo", seed, **kw)
    m = get_method(method)
    job["method"], job["hparams"] = method, m.resolve()
    job["trl"].update({**m.trl_overrides, **job["hparams"]})
    return job


def test_kl_cov_refuses_on_policy_training():
    with pytest.raises(ConfigError, match="no-op when training is fully on-policy"):
        resolve_job("entropy_mechanism", "smoke", "kl_cov", 1,
                    trl_overrides={"steps_per_generation": 1, "num_iterations": 1})
