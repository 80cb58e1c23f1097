"""Plan: a run configuration and the cards -> fully resolved jobs (method hyperparameters checked against the
registry, TRL fields checked against ``GRPOConfig``). The DAG resolves each job once and writes it as
``job.json``; training and evaluation read that file."""
from __future__ import annotations

import difflib

from harness.config import ConfigError, load_card
from harness.methods.registry import RegistryError, get_method
from harness.results import config_hash


def check_card_methods(paper: str) -> dict:
    """The card, with every method's hyperparameters (card defaults and tier overrides) checked against the
    registry: an unknown name is a ConfigError naming the valid ones, a value of the wrong type one naming the card,
    the tier (``every tier`` for the card's own ``methods`` block), the method, the field, the expected type and the
    value (the types: :class:`harness.methods.registry.HParam`)."""
    card = load_card(paper)
    path = f"replications/{paper}/card.yaml"
    for name, hp in card["methods"].items():
        try:
            get_method(name).resolve(hp)
        except RegistryError as e:
            raise ConfigError(f"{path}: methods/{name} (every tier): {e}") from None
    for tier, tcfg in card["tiers"].items():
        for name, hp in (tcfg.get("methods") or {}).items():
            if name not in card["methods"]:
                raise ConfigError(f"{path}: tiers/{tier}/methods: unknown method {name!r}; "
                                  f"valid: {', '.join(card['methods'])}")
            try:
                get_method(name).resolve({**card["methods"][name], **hp})
            except RegistryError as e:
                raise ConfigError(f"{path}: tiers/{tier}/methods/{name}: {e}") from None
    return card


def trl_fields() -> set[str]:
    import dataclasses

    from trl import GRPOConfig

    return {f.name for f in dataclasses.fields(GRPOConfig)}


def check_trl_keys(trl: dict, where: str) -> None:
    valid = trl_fields()
    for k in trl:
        if k not in valid:
            hint = difflib.get_close_matches(k, sorted(valid), n=1)
            raise ConfigError(f"{where}: {k!r} is not a TRL GRPOConfig field"
                              + (f" (did you mean {hint[0]!r}?)" if hint else "")
                              + "; see trl.GRPOConfig for the valid fields")


def jobs(cfg: dict) -> list[tuple[str, str, int]]:
    """(method, seed, tier) jobs of a run configuration, from the card."""
    card = load_card(cfg["paper"])
    methods = cfg.get("methods") or list(card["methods"])
    seeds = cfg.get("seeds") or card["tiers"][cfg["tier"]]["seeds"]
    return [(m, int(s)) for m in methods for s in seeds]


def resolve_job(paper: str, tier: str, method: str, seed: int, *, check_trl: bool = False,
                trl_overrides: dict | None = None) -> dict:
    """Everything one training job needs, fully resolved (this dict is hashed and logged as params)."""
    card = check_card_methods(paper)
    if tier not in card["tiers"]:
        raise ConfigError(f"paper {paper!r} has no tier {tier!r}; valid: {', '.join(card['tiers'])}")
    if method not in card["methods"]:
        raise ConfigError(f"paper {paper!r} has no method {method!r}; valid: {', '.join(card['methods'])}")
    t = card["tiers"][tier]
    m = get_method(method)
    hparams = m.resolve({**card["methods"][method], **(t.get("methods") or {}).get(method, {})})
    trl = {**t["trl"], **m.trl_overrides, **(hparams if m.point == "config" else {}), **(trl_overrides or {})}
    if check_trl:
        check_trl_keys(trl, f"replications/{paper}/card.yaml tiers/{tier}/trl")
    if m.requires_off_policy:
        ga = trl.get("gradient_accumulation_steps", 1)
        spg = trl.get("steps_per_generation") or ga
        if trl.get("num_iterations", 1) <= 1 and spg <= ga:
            raise ConfigError(
                f"method {method!r} is a no-op when training is fully on-policy (|logp - logp_old| = 0): set "
                f"num_iterations > 1 or steps_per_generation > gradient_accumulation_steps in tiers/{tier}/trl")
    _check_smoke_task(t, f"replications/{paper}/card.yaml tiers/{tier}")
    job = {"tier": tier, "method": method, "seed": int(seed), "hparams": hparams,
           "trl": trl, "model": t["model"], "data": t.get("data", {}), "eval": t.get("eval", {}),
           "pretrain": t.get("pretrain")}
    if m.version > 1:  # a re-implemented method is a new job (absent: version 1, so older keys stay valid)
        job["method_version"] = m.version
    return keyed(job)


def _check_smoke_task(t: dict, where: str) -> None:
    """A smoke tier's task must be one of :data:`harness.data.smoke_tasks.SMOKE_TASKS` (checked before anything runs)."""
    from harness.config.tiers import DataSpec, ModelSpec, SettingError, parse as parse_setting
    from harness.data.smoke_tasks import SMOKE_TASKS

    try:
        kind = parse_setting(ModelSpec, t.get("model"), f"{where}/model").kind
        task = parse_setting(DataSpec, t.get("data"), f"{where}/data").task
    except SettingError as e:
        raise ConfigError(str(e)) from None
    if kind == "smoke" and task not in SMOKE_TASKS:
        raise ConfigError(f"{where}/data/task: unknown smoke task {task!r}; valid: {', '.join(SMOKE_TASKS)}")


def keyed(job: dict) -> dict:
    """The job with its content keys: ``job_key`` (everything but the seed: cards whose resolved configs agree share
    it, so the DAG trains each distinct job once per seed) and ``config_hash`` (the whole job, seed included).
    The card that asked for the job is not part of it."""
    body = {k: v for k, v in job.items() if k not in ("job_key", "config_hash")}
    key = config_hash({k: v for k, v in body.items() if k != "seed"})[:12]
    return {**body, "job_key": key, "config_hash": config_hash({**body, "job_key": key})}


def job_dir(job: dict) -> str:
    """Where a job lives under the work (or results) directory: ``jobs/<tier>/<method>/<job_key>/seed<seed>``."""
    return f"jobs/{job['tier']}/{job['method']}/{job['job_key']}/seed{job['seed']}"


def base_eval_key(job: dict) -> str:
    """Key of the untrained model's held-out evaluation: what defines the base model and the held-out protocol."""
    return config_hash({k: job.get(k) for k in ("tier", "model", "pretrain", "data", "eval")})[:12]


def smoke_spec(paper: str) -> str:
    """Hash of what defines a smoke-tier base model (model, pre-training, task split): cards that agree share it."""
    t = load_card(paper)["tiers"]["smoke"]
    return config_hash({k: t.get(k) for k in ("model", "pretrain")} | {"data": t.get("data")})[:12]
