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


#: a few-second version of the smoke-agent tier (the household game) for agent cards, which have no smoke tier
TINY_AGENT = {"trl_overrides": {"max_steps": 2, "per_device_train_batch_size": 8, "num_generations": 4,
                                "steps_per_generation": 1, "warmup_steps": 0},
              "data": {"n_train": 40, "n_val": 6}, "eval": {"every_steps": 2, "n_val": 6}}


@pytest.fixture(scope="module")
def tiny_agent_base(tmp_path_factory):
    """A tiny household (smoke-agent) base model pre-trained for a few steps."""
    from harness.train.pretrain import pretrain

    out = tmp_path_factory.mktemp("models") / "agent"
    pretrain(out, TINY_SMOKE["model"], {**TINY_SMOKE["pretrain"], "steps": 3, "batch_size": 4},
             {"task": "household", **TINY_AGENT["data"]}, log=lambda *a: None)
    return out


@pytest.mark.parametrize("method,paper", _cases())
def test_metrics_contract(method, paper, tiny_base, tiny_agent_base, tmp_path):
    """Every registered method (card-less TRL baselines run on the entropy_mechanism smoke tier; agent cards, which
    have no smoke tier, on a tiny smoke-agent tier)."""
    from harness.train import job as train

    resolve = _tiny_resolve if paper else _uncarded_resolve
    agent = paper is not None and "smoke" not in load_card(paper)["tiers"]
    if agent:
        job = resolve_job(paper, "smoke-agent", method, 3, trl_overrides=TINY_AGENT["trl_overrides"])
        job["data"] = {**job["data"], **TINY_AGENT["data"]}
        job["eval"] = {**job["eval"], **TINY_AGENT["eval"]}
        base = tiny_agent_base
    else:
        job = resolve(paper or "entropy_mechanism", "smoke", method, 3, trl_overrides=TINY_SMOKE["trl_overrides"])
        base = tiny_base
    r = train.run_job(job, model_dir=base, out_dir=tmp_path, data_dir=Path("."), mlflow_uri=None,
                      upstream=_upstream(job, base, tmp_path))
    rows = r["metrics"]
    assert [m["step"] for m in rows] == list(range(1, job["trl"]["max_steps"] + 1))
    spg = r["job"]["trl"]["steps_per_generation"]
    kept = None
    for row in rows:
        required = set(REQUIRED_METRICS)
        if (row["step"] - 1) % spg:
            required -= GENERATION_STEP_METRICS
        kept = row.get("data/kept_frac", kept) if (row["step"] - 1) % spg == 0 else kept  # of the step's batch
        if kept == 0:  # a data hook left the loss no token: nothing co-varies (NaN, so no value is logged)
            required -= {"cov_logp_adv/mean", "cov_logp_adv/top_mean"}
        missing = required - set(row)
        assert not missing, f"{method} step {row['step']} did not log {sorted(missing)}"
    assert r["heldout"][0]["step"] == 0 and r["heldout"][-1]["step"] == job["trl"]["max_steps"]
    assert (tmp_path / "result.json").exists() and (tmp_path / "metrics.jsonl").exists()


def _upstream(job: dict, tiny_base: Path, tmp_path: Path) -> dict:
    """Stand-ins for a job's upstream inputs (what the DAG's rules produce; tests/test_upstream.py runs those): a
    ranking of two training prompts, and the tiny base model as its own implicit PRM (zero process reward)."""
    import json

    out = {}
    for name, spec in (job.get("upstream") or {}).items():
        if spec["kind"] == "ranking":
            from harness.data.selection import rank_history

            rows = {"0": {"prompt": "12+34=", "answer": "46"}, "1": {"prompt": "5+6=", "answer": "11"}}
            hist = {"kind": "train_history", "n": 8, "history": {"0": [0.0, 0.5, 1.0], "1": [1.0, 1.0, 1.0]},
                    "rows": rows}
            path = tmp_path / "ranking.json"
            path.write_text(json.dumps(rank_history(hist, "std")))
            out[name] = path
        elif spec["kind"] == "prm":
            job["hparams"].update(ref_dir=str(tiny_base), beta=0.05)
            out[name] = tiny_base
        else:
            raise AssertionError(f"no stand-in for upstream kind {spec['kind']!r}")
    return out


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


def test_a_micro_batch_without_loss_tokens_does_not_pull_the_covariance_to_zero():
    """A data hook that drops every group of a micro-batch leaves no token to co-vary: the trainer logs NaN for it,
    TRL's log() averages the finite values only, so the step's covariance is that of the micro-batches with tokens
    (and a step with none logs no value) - a 0.0 placeholder would halve the mean below."""
    import math
    from collections import defaultdict
    from types import SimpleNamespace

    import torch

    from harness.methods.context import TokenContext
    from harness.train.trainer import HarnessGRPOTrainer

    fake = SimpleNamespace(_metrics={"train": defaultdict(list)})
    lp = torch.tensor([[-1.0, -2.0, -0.5, -3.0]])
    full = TokenContext.build(lp, lp, torch.tensor([1.0]), torch.ones(1, 4))
    empty = TokenContext.build(lp, lp, torch.tensor([1.0]), torch.zeros(1, 4))
    HarnessGRPOTrainer._log_diagnostics(fake, full, "train")
    HarnessGRPOTrainer._log_diagnostics(fake, empty, "train")
    vals = fake._metrics["train"]["cov_logp_adv/mean"]
    finite = [v for v in vals if not math.isnan(v)]
    assert len(vals) == 2 and len(finite) == 1 and math.isnan(vals[1])
    assert finite[0] == pytest.approx(float(full.token_cov()[full.mask > 0].mean()))
