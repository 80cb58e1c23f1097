"""Plan: a run configuration and the cards -> fully resolved jobs (method hyperparameters checked against the
registry, TRL fields checked against ``GRPOConfig``). The DAG resolves each job once and writes it as
``job.json``; training and evaluation read that file.

Upstream inputs (a job that depends on another job's or rule's output). A card's tier may give a method inputs
produced upstream, in ``tiers.<tier>.upstream.<method>.<name>: {kind: ..., ...}``; ``<name>`` is a hyperparameter of
the method of type ``str | None`` (a path), null in ``job.json`` and filled by ``harness train`` with the artifact's
absolute path (:func:`harness.train.job.upstream_paths`). The resolved job carries ``upstream.<name>`` = the
producer's spec, its content key and the artifact's path under the work dir (``upstream/<kind>/<key>/<output>``),
so the job key changes with the producer and jobs without upstream inputs keep their keys. Kinds:

- ``ranking`` (built in; 1-shot RLVR): ``{kind: ranking, rule: std | lim | random, run: <card method>, n_train: N,
  trl: {...}}``. The *ranking run* is a training job of ``run`` (default: the card's baseline) on the same tier and
  seed, which also records each training row's accuracy per visit (job field ``history``, so its key differs from
  the plain job's; it lives under ``recorded/`` and writes ``train_history.json``), on the first ``n_train`` rows of
  the tier's training set (null: all) with the ``trl`` overrides; rule ``rank_history`` (``harness rank``) turns
  the history into ``upstream/ranking/<key>/ranking.json`` (:mod:`harness.data.selection`).
- any other kind (e.g. ``prm``: a trained reward model): ``{kind: <k>, output: <file or dir name>, ...}`` with any
  further settings, optionally ``run: <card method>`` (+ ``n_train``, ``trl``) for a producer training job whose
  directory is passed on (``run_dir``). The DAG writes the resolved spec to ``upstream/<k>/<key>/spec.json`` (rule
  ``upstream_spec``); a rule of the kind's own ``.smk`` file must produce ``upstream/<k>/<key>/<output>`` from it,
  e.g. ``input: spec=WORK + "/upstream/prm/{ukey}/spec.json"``, ``output: directory(WORK +
  "/upstream/prm/{ukey}/model")``. The train rule then waits for that output and the method gets its path.
"""
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
        unknown = [m for m in tcfg.get("trains") or [] if m not in card["methods"]]
        if unknown:
            raise ConfigError(f"{path}: tiers/{tier}/trains: unknown method {unknown[0]!r}; "
                              f"valid: {', '.join(card['methods'])}")
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
    """(method, seed) jobs of a run configuration: the configuration's methods, else the tier's ``trains``, else every
    method of the card; each with the configuration's seeds, else the tier's."""
    card = load_card(cfg["paper"])
    methods = cfg.get("methods") or card["tiers"][cfg["tier"]].get("trains") or list(card["methods"])
    seeds = cfg.get("seeds") or card["tiers"][cfg["tier"]]["seeds"]
    return [(m, int(s)) for m in methods for s in seeds]


def resolve_job(paper: str, tier: str, method: str, seed: int, *, check_trl: bool = False,
                trl_overrides: dict | None = None, history: dict | None = None) -> dict:
    """Everything one training job needs, fully resolved (this dict is hashed and logged as params). ``history``:
    the job also records per-row training accuracy (a ranking run, see the module docstring); its upstream inputs
    (``tiers.<tier>.upstream.<method>``) are resolved into ``job["upstream"]``. Both keys are absent otherwise, so
    the content keys of jobs without them do not change."""
    card = check_card_methods(paper)
    if tier not in card["tiers"]:
        raise ConfigError(f"paper {paper!r} has no tier {tier!r}; valid: {', '.join(card['tiers'])}")
    if method not in card["methods"]:
        raise ConfigError(f"paper {paper!r} has no method {method!r}; valid: {', '.join(card['methods'])}")
    t = card["tiers"][tier]
    m = get_method(method)
    hparams = m.resolve({**card["methods"][method], **(t.get("methods") or {}).get(method, {})})
    trl = {**t["trl"], **m.trl_overrides, **m.trl_hparams(hparams), **(trl_overrides or {})}
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
    if t.get("monitors") is not None:  # training monitors (harness.train.monitors); absent: none, keys unchanged
        from harness.config.tiers import MonitorSpec, SettingError, parse as parse_setting

        try:
            parse_setting(MonitorSpec, t["monitors"], f"replications/{paper}/card.yaml tiers/{tier}/monitors")
        except SettingError as e:
            raise ConfigError(str(e)) from None
        job["monitors"] = dict(t["monitors"])
    if m.version > 1:  # a re-implemented method is a new job (absent: version 1, so older keys stay valid)
        job["method_version"] = m.version
    if history is not None:
        job["history"] = dict(history)
    inputs = upstream_plan(paper, tier, method, seed, check_trl=check_trl)[0]
    if inputs:
        job["upstream"] = inputs
    return keyed(job)


#: built-in upstream kinds -> the artifact's file name under upstream/<kind>/<key>/
UPSTREAM_OUTPUTS = {"ranking": "ranking.json"}
_RUN_KEYS = ("run", "n_train", "trl")


def upstream_plan(paper: str, tier: str, method: str, seed: int, *, check_trl: bool = False) -> tuple[dict, dict]:
    """(inputs, runs) of a job's upstream inputs (module docstring): ``inputs`` name -> resolved spec (what the job
    keeps: kind, settings, producer run's job dir and config hash, content ``key``, artifact ``path`` relative to
    the work dir); ``runs`` job dir -> resolved producer training job. Both empty for a method without inputs."""
    card = load_card(paper)
    where = f"replications/{paper}/card.yaml tiers/{tier}/upstream"
    block = (card["tiers"][tier].get("upstream") or {})
    for name in block:
        if name not in card["methods"]:
            raise ConfigError(f"{where}: unknown method {name!r}; valid: {', '.join(card['methods'])}")
    inputs, runs = {}, {}
    m = get_method(method)
    for name, spec in sorted((block.get(method) or {}).items()):
        w = f"{where}/{method}/{name}"
        hp = m.hparams.get(name)
        if hp is None or not hp.accepts("path"):
            paths = [k for k, h in m.hparams.items() if h.accepts("path") and h.default is None]
            raise ConfigError(f"{w}: method {method!r} has no path hyperparameter {name!r} to receive the input; "
                              f"valid: {', '.join(paths) or '(none)'}")
        if not isinstance(spec, dict) or "kind" not in spec:
            raise ConfigError(f"{w}: an upstream input is a mapping with a 'kind' ({', '.join(UPSTREAM_OUTPUTS)} or "
                              "another rule's kind with 'output')")
        spec = dict(spec)
        kind = spec["kind"]
        if kind == "ranking":
            from harness.data.selection import RULES

            spec.setdefault("rule", "std")
            spec.setdefault("run", card["baseline"])
            if spec["rule"] not in RULES:
                raise ConfigError(f"{w}: unknown rule {spec['rule']!r}; valid: {', '.join(RULES)}")
            bad = sorted(set(spec) - {"kind", "rule", *_RUN_KEYS})
            if bad:
                raise ConfigError(f"{w}: unknown setting {bad[0]!r}; valid: kind, rule, {', '.join(_RUN_KEYS)}")
            spec["output"] = UPSTREAM_OUTPUTS[kind]
            spec["seed"] = int(seed)  # the ranking run's seed, and the random rule's
        elif not isinstance(spec.get("output"), str) or not spec["output"] or "/" in spec["output"]:
            raise ConfigError(f"{w}: kind {kind!r} is not built in ({', '.join(UPSTREAM_OUTPUTS)}): give 'output', "
                              "the file or directory name its rule writes under upstream/<kind>/<key>/")
        resolved = {k: v for k, v in spec.items() if k not in _RUN_KEYS}
        if "run" in spec:
            run = spec["run"]
            if run not in card["methods"]:
                raise ConfigError(f"{w}: run: unknown method {run!r}; valid: {', '.join(card['methods'])}")
            if block.get(run):
                raise ConfigError(f"{w}: the producer run {run!r} cannot have upstream inputs itself (no chains)")
            if not isinstance(spec.get("trl") or {}, dict):
                raise ConfigError(f"{w}: trl must be a mapping of TRL GRPOConfig fields")
            n = spec.get("n_train")
            if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
                raise ConfigError(f"{w}: n_train must be a positive integer or null, got {n!r}")
            rjob = resolve_job(paper, tier, run, seed, check_trl=check_trl, trl_overrides=spec.get("trl") or None,
                               history={"n_train": n} if kind == "ranking" else None)
            runs[job_dir(rjob)] = rjob
            resolved.update(run=run, run_dir=job_dir(rjob), run_config_hash=rjob["config_hash"])
        else:
            t = card["tiers"][tier]  # what defines the base model the artifact is built from (its key's parts)
            resolved.update(tier=tier, model=t["model"], pretrain=t.get("pretrain"), data=t.get("data", {}))
        key = config_hash(resolved)[:12]
        inputs[name] = {**resolved, "key": key, "path": f"upstream/{kind}/{key}/{resolved['output']}"}
    return inputs, runs


def _check_smoke_task(t: dict, where: str) -> None:
    """A smoke tier's task must be one of :data:`harness.data.smoke_tasks.SMOKE_TASKS`, and a real model's alfworld
    or arpo_tools task name its sets and a template of its turn format (checked before anything runs)."""
    from harness.config.tiers import DataSpec, ModelSpec, SettingError, parse as parse_setting
    from harness.data.smoke_tasks import SMOKE_TASKS

    try:
        model = parse_setting(ModelSpec, t.get("model"), f"{where}/model")
        task = parse_setting(DataSpec, t.get("data"), f"{where}/data").task
    except SettingError as e:
        raise ConfigError(str(e)) from None
    kind = model.kind
    if model.cold_start is not None:  # the SFT stage before RL: a hub model's, checked before anything runs
        if kind != "hf":
            raise ConfigError(f"{where}/model/cold_start: a cold start fine-tunes a hub model (kind hf), not {kind!r}")
        from harness.data.chat_sft import check_spec
        from harness.plan.launch import cold_start_launch

        check_spec(model.cold_start, f"{where}/model/cold_start")
        cold_start_launch(model.cold_start, f"{where}/model/cold_start")
    if kind == "smoke" and task not in SMOKE_TASKS:
        raise ConfigError(f"{where}/data/task: unknown smoke task {task!r}; valid: {', '.join(SMOKE_TASKS)}")
    from harness.data.load import EPISODE_TASKS

    if kind != "smoke" and task in EPISODE_TASKS:  # its sets and prompt shape, before anything runs
        from importlib import import_module

        data = parse_setting(DataSpec, t.get("data"), f"{where}/data")
        import_module(EPISODE_TASKS[task]).check(data, f"{where}/data")


def keyed(job: dict) -> dict:
    """The job with its content keys: ``job_key`` (everything but the seed: cards whose resolved configs agree share
    it, so the DAG trains each distinct job once per seed) and ``config_hash`` (the whole job, seed included).
    The card that asked for the job is not part of it."""
    body = {k: v for k, v in job.items() if k not in ("job_key", "config_hash")}
    key = config_hash({k: v for k, v in body.items() if k != "seed"})[:12]
    return {**body, "job_key": key, "config_hash": config_hash({**body, "job_key": key})}


def job_dir(job: dict) -> str:
    """Where a job lives under the work (or results) directory: ``jobs/<tier>/<method>/<job_key>/seed<seed>``; a job
    that records its training history (an upstream ranking run) under ``recorded/`` instead (rule
    ``train_recorded``: its own outputs, never evaluated or judged)."""
    root = "recorded" if job.get("history") is not None else "jobs"
    return f"{root}/{job['tier']}/{job['method']}/{job['job_key']}/seed{job['seed']}"


def base_eval_key(job: dict) -> str:
    """Key of the untrained model's held-out evaluation: what defines the base model and the held-out protocol."""
    return config_hash({k: job.get(k) for k in ("tier", "model", "pretrain", "data", "eval")})[:12]


def smoke_spec(paper: str) -> str:
    """Hash of what defines a smoke-tier base model (model, pre-training, task split): cards that agree share it."""
    t = load_card(paper)["tiers"]["smoke"]
    return config_hash({k: t.get(k) for k in ("model", "pretrain")} | {"data": t.get("data")})[:12]
