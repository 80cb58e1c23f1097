"""Held-out evaluation: the policy on the tier's held-out prompts, during training (:class:`harness.train.callbacks.PeriodicEval`)
and for final checkpoints (``harness eval-heldout``).

Every ``every_steps`` optimizer steps the policy answers the held-out prompts greedily and by sampling at
the training temperature; we record greedy accuracy, sampled accuracy and the mean token entropy of the
sampled completions (nats/token, temperature-scaled like TRL's training entropy).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Mapping

import torch

from harness.config.tiers import EvalSpec, parse as parse_setting


def _with_env(environment, tok) -> tuple[dict, object]:
    """Generate kwargs running a task's environment (a fresh one per ``generate`` call), and that environment."""
    if environment is None:
        return {}, None
    from transformers import LogitsProcessorList

    env = environment(tok)
    return {"logits_processor": LogitsProcessorList([env])}, env


def _greedy_batches(model, tok, prompts, answers, *, batch_size: int, max_new_tokens: int, seed: int,
                    environment=None):
    """Seeded loop over prompt batches: yields (answers, encoded prompts, generate kwargs, greedy completions). The
    caller samples inside the same forked RNG stream (seeded once; the caller's RNG is restored at the end)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for i in range(0, len(prompts), batch_size):
            p, a = prompts[i:i + batch_size], answers[i:i + batch_size]
            enc = tok(p, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
            common = dict(max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
            g = model.generate(**enc, do_sample=False, **common, **_with_env(environment, tok)[0])
            yield a, enc, common, tok.batch_decode(g[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)


@torch.no_grad()
def evaluate_policy(model, tok, prompts: list[str], answers: list[str], *, score: Callable[[str, str], bool],
                    temperature: float = 1.0, max_new_tokens: int = 4, seed: int = 0,
                    batch_size: int = 512, environment=None) -> dict:
    """Greedy and sampled accuracy, mean token entropy (of the model's own tokens: positions a task environment wrote
    are left out) and mean length of the sampled completions."""
    was_training = model.training
    model.eval()
    out = {"greedy_acc": 0.0, "sampled_acc": 0.0, "entropy": 0.0, "mean_length": 0.0}
    n_tok = 0
    for a, enc, common, texts in _greedy_batches(model, tok, prompts, answers, batch_size=batch_size,
                                                 max_new_tokens=max_new_tokens, seed=seed, environment=environment):
        out["greedy_acc"] += sum(score(t, ans) for t, ans in zip(texts, a))
        env_kw, env = _with_env(environment, tok)
        s = model.generate(**enc, do_sample=True, temperature=temperature, top_k=0, top_p=1.0,
                           output_logits=True, return_dict_in_generate=True, **common, **env_kw)
        comp = s.sequences[:, enc["input_ids"].shape[1]:]
        texts = tok.batch_decode(comp, skip_special_tokens=True)
        out["sampled_acc"] += sum(score(t, ans) for t, ans in zip(texts, a))
        logits = torch.stack(s.logits, dim=1).float() / temperature        # (B, T, V)
        logp = torch.log_softmax(logits, dim=-1)
        ent = -(logp.exp() * logp).sum(-1)                                 # (B, T)
        # valid = generated tokens up to and including the first eos
        is_eos = comp == tok.eos_token_id
        after_eos = (is_eos.cumsum(1) - is_eos.long()) > 0
        valid = (~after_eos) & (comp != tok.pad_token_id) | is_eos & ~after_eos
        if env is not None:  # the environment's tokens are not the policy's: no entropy there
            own = torch.tensor([env.env_mask(i, comp.size(1)) for i in range(comp.size(0))], dtype=torch.bool)
            valid = valid & own
        out["entropy"] += float(torch.where(valid, ent, 0.0).sum())  # not ent * valid: a forced token's is NaN
        out["mean_length"] += float(valid.sum())
        n_tok += int(valid.sum())
    n = len(prompts)
    model.train(was_training)
    return {"greedy_acc": out["greedy_acc"] / n, "sampled_acc": out["sampled_acc"] / n,
            "entropy": out["entropy"] / max(n_tok, 1), "mean_length": out["mean_length"] / n}


# ---------------------------------------------------------------------------
# Final-checkpoint evaluation on the held-out set of a resolved job (``harness eval-heldout``; the Snakemake
# ``eval_heldout`` rule): per-problem verdicts of k samples and of the greedy answer, in the same ``eval_result``
# schema (harness.evaluate.record) and with a protocol hash like the lm-eval benchmarks, so that leaderboards and
# claims read both the same way.
# ---------------------------------------------------------------------------



@torch.no_grad()
def heldout_samples(model, tok, prompts: list[str], answers: list[str], *, score: Callable[[str, str], bool],
                    k: int, temperature: float, max_new_tokens: int, seed: int,
                    batch_size: int = 256, environment=None) -> tuple[list[bool], list[list[bool]], list[list[str]]]:
    """Greedy verdict per problem, k sampled verdicts per problem, and the k sampled completions (vote keys)."""
    model.eval()
    greedy, sampled, texts_all = [], [], []
    for a, enc, common, texts in _greedy_batches(model, tok, prompts, answers, batch_size=batch_size,
                                                 max_new_tokens=max_new_tokens, seed=seed, environment=environment):
        greedy += [bool(score(t, ans)) for t, ans in zip(texts, a)]
        s = model.generate(**enc, do_sample=True, temperature=temperature, top_k=0, top_p=1.0,
                           num_return_sequences=k, **common, **_with_env(environment, tok)[0])
        texts = tok.batch_decode(s[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        for j, ans in enumerate(a):
            mine = [t.strip() for t in texts[j * k:(j + 1) * k]]
            sampled.append([bool(score(t, ans)) for t in mine])
            texts_all.append(mine)
    return greedy, sampled, texts_all


def heldout_samples_vllm(model_dir, tok, prompts: list[str], answers: list[str], *, score: Callable[[str, str], bool],
                         k: int, temperature: float, max_new_tokens: int, seed: int,
                         engine=None) -> tuple[list[bool], list[list[bool]], list[list[str]]]:
    """:func:`heldout_samples` through vLLM (``eval.backend: vllm``, GPU tiers): the same prompts as token ids (no
    special tokens added, as the HF path encodes them), one greedy response and k samples at ``temperature`` with
    top-k and top-p off, up to ``max_new_tokens``; problem i samples with seed ``seed * 1000003 + i`` (reproducible
    whatever vLLM's batching, and not one random stream shared by every problem)."""
    from harness.config.backend import VllmEngine, engine_args, require_vllm, sampling_args

    require_vllm("the held-out evaluation (eval.backend: vllm)", cuda_available=torch.cuda.is_available())
    from vllm import LLM, SamplingParams

    llm = LLM(**engine_args(str(model_dir), engine or VllmEngine(), seed=seed, n_gpus=torch.cuda.device_count()))
    ids = [{"prompt_token_ids": tok(p, add_special_tokens=False)["input_ids"]} for p in prompts]
    greedy_out = llm.generate(ids, SamplingParams(**sampling_args(n=1, temperature=0.0, max_tokens=max_new_tokens,
                                                                  seed=seed)))
    sampled_out = llm.generate(ids, [SamplingParams(**sampling_args(n=k, temperature=temperature,
                                                                    max_tokens=max_new_tokens,
                                                                    seed=seed * 1000003 + i))
                                     for i in range(len(prompts))])
    greedy = [bool(score(o.outputs[0].text, a)) for o, a in zip(greedy_out, answers)]
    texts = [[c.text.strip() for c in o.outputs] for o in sampled_out]
    if any(len(t) != k for t in texts):
        raise RuntimeError(f"vLLM returned {sorted({len(t) for t in texts})} samples per problem, expected k={k}")
    return greedy, [[bool(score(t, a)) for t in row] for row, a in zip(texts, answers)], texts


def evaluate_heldout_job(job: dict | str | Path, model_dir, *, data_dir, out, seed: int = 0, k: int | None = None,
                         source: dict | None = None, threads: int = 1, bootstrap_iters: int = 2000,
                         engine=None) -> dict:
    """Evaluate a checkpoint (trained or base) on the held-out set of a resolved job; writes an ``eval_result``
    atomically (:mod:`harness.evaluate.record`) and returns it as written.

    ``job`` is what :func:`harness.plan.resolve_job` returns, or the path of its job.json (``model``, ``data`` and
    ``eval`` are read); ``source`` names the checkpoint (keys method, seed, tier, job_key, paper); ``None`` means
    the base model of the job's tier. The job's ``eval.backend`` picks the engine: ``hf`` (transformers
    ``generate``) or ``vllm`` (:func:`heldout_samples_vllm`; ``engine``: a :class:`harness.config.backend.VllmEngine`).
    Two entries: ``heldout`` (k samples per problem at the tier's evaluation temperature: avg@k, pass@1,
    pass@k, maj@k) and ``heldout_greedy`` (greedy accuracy). The protocol covers the held-out rows' digest
    (prompts, including any chat template, and answers), sampling, max tokens, k, the scorer and the seed.
    """
    from harness.data.load import load_model_and_data
    from harness.evaluate.record import eval_record, write_record

    t0 = time.time()
    job = check_job(job)
    torch.set_num_threads(threads)
    ev = parse_setting(EvalSpec, job["eval"], "job eval")
    k = int(k or ev.final_k)
    temperature, max_new = float(ev.temperature), int(ev.max_new_tokens)
    model, tok, _train, val_rows, _reward, score = load_model_and_data(job, Path(model_dir), Path(data_dir))
    val_rows = val_rows[: ev.n_val]
    prompts, answers = [r["prompt"] for r in val_rows], [r["answer"] for r in val_rows]
    task = _smoke_task(job)
    if source is None:
        source = {"method": "base", **({"tier": job["tier"]} if job.get("tier") else {})}
    from harness.data.load import episodes_of

    spec = episodes_of(job, data_dir)
    if spec is not None:  # a game (smoke household, alfworld): episodes on the held-out games
        result = _episode_heldout(job, model, tok, prompts, spec, k=k, temperature=temperature, seed=seed,
                                  source=source, model_dir=model_dir, t0=t0, bootstrap_iters=bootstrap_iters)
        return write_record(result, out)
    if ev.backend == "vllm":
        from harness.config import ConfigError

        if task is not None:
            raise ConfigError(f"eval.backend vllm: the smoke task {task.name!r} is evaluated with HF generate (its "
                              "environment and vote keys hook into it); use backend hf")
        del model  # vLLM loads its own copy of the weights
        greedy, sampled, texts = heldout_samples_vllm(model_dir, tok, prompts, answers, score=score, k=k,
                                                      temperature=temperature, max_new_tokens=max_new, seed=seed,
                                                      engine=engine)
    elif ev.backend == "hf":
        greedy, sampled, texts = heldout_samples(model, tok, prompts, answers, score=score, k=k,
                                                 temperature=temperature, max_new_tokens=max_new, seed=seed,
                                                 environment=task.environment if task else None)
    else:
        from harness.config import ConfigError
        from harness.config.backend import BACKENDS

        raise ConfigError(f"job eval.backend: unknown backend {ev.backend!r}; valid: {', '.join(BACKENDS)}")
    base = _base_protocol(job, val_rows, tok, max_new=max_new, seed=seed)
    votes = [[task.vote_key(t) for t in row] for row in texts] if task else None  # maj@k over committed answers
    runs = (("heldout", sampled, votes,
             {"do_sample": True, "temperature": temperature, "top_p": 1.0, "top_k": 0}, k),
            ("heldout_greedy", [[g] for g in greedy], None, {"do_sample": False}, 1))
    entries, protocols = {}, {}
    for name, corr, votes, sampling, kk in runs:
        entries[name], protocols[name] = _entry(name, job, base, corr, votes, sampling, kk, seed=seed,
                                                bootstrap_iters=bootstrap_iters)
    result = eval_record(benchmarks=entries, protocol=protocols, source=source, model_dir=model_dir, t0=t0,
                         settings={"k": k, "temperature": temperature, "max_gen_toks": max_new, "seed": int(seed),
                                   **({"backend": ev.backend} if ev.backend != "hf" else {})})
    return write_record(result, out)


def _episode_heldout(job: dict, model, tok, game_ids: list[str], spec, *, k: int, temperature: float, seed: int,
                     source: dict, model_dir, t0: float, bootstrap_iters: int) -> dict:
    """The held-out evaluation of a task that plays episodes (rows are game ids of ``spec.heldout_split``): the same
    two entries, ``<task>_heldout`` (k sampled episodes per game: avg@k is the success rate) and
    ``<task>_heldout_greedy``, each :func:`harness.evaluate.agent.evaluate_agent`'s entry (success per task type with
    CIs, episode statistics, the split named, the environment's protocol hashed)."""
    from harness.evaluate.agent import evaluate_agent
    from harness.evaluate.record import eval_record

    name = f"{job['data']['task']}_heldout"
    common = dict(split=spec.heldout_split, max_turns=spec.max_turns,
                  max_new_tokens_per_turn=spec.max_new_tokens_per_turn, template=spec.template,
                  max_episode_tokens=spec.max_episode_tokens, seed=seed, invalid_penalty=spec.invalid_penalty,
                  source=source, model_dir=model_dir, bootstrap_iters=bootstrap_iters, reward=spec.reward)
    factory = lambda: spec.env(spec.heldout_split, game_ids)  # noqa: E731
    runs = [evaluate_agent(model, tok, factory, game_ids, k=k, temperature=temperature, benchmark=name, **common),
            evaluate_agent(model, tok, factory, game_ids, k=1, temperature=0.0, benchmark=name + "_greedy", **common)]
    return eval_record(benchmarks={n: e for r in runs for n, e in r["benchmarks"].items()},
                       protocol={n: p for r in runs for n, p in r["protocol"]["benchmarks"].items()}, source=source,
                       model_dir=model_dir, t0=t0, settings={**runs[0]["settings"], "k": k, "greedy_k": 1})


def check_job(job) -> dict:
    """``job`` (a dict or a path to job.json) with the sections the held-out evaluation reads, or ConfigError."""
    from harness.config import ConfigError

    if not isinstance(job, Mapping):
        path = Path(job)
        try:
            job = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"cannot read job file {path}: {e}") from None
    missing = [key for key in ("model", "data", "eval") if not isinstance(job.get(key), Mapping)]
    if missing or "kind" not in job["model"] or "task" not in job["data"]:
        raise ConfigError(f"not a resolved job (harness.plan.resolve_job): needs model.kind, data.task and eval; "
                          f"missing {missing or ['model.kind or data.task']}")
    return dict(job)


def _smoke_task(job: dict):
    """The job's smoke task (:mod:`harness.data.smoke_tasks`), or None for real models."""
    if job["model"]["kind"] != "smoke":
        return None
    from harness.data.smoke_tasks import smoke_task
    from harness.config.tiers import DataSpec

    return smoke_task(parse_setting(DataSpec, job["data"], "job data").task)


def _scorer(job: dict) -> dict:
    task = _smoke_task(job)
    if task is not None and task.name == "addition":  # the trained completion must equal the answer (the reward)
        return {"name": "exact_match", "strip": True}
    if task is not None and task.scorer:  # a task with its own checker (instruct, spec_dialogue)
        return {"name": task.scorer}
    from harness.verify import verifier_config

    if task is not None:  # the last \boxed{}: integers compared as integers, the rest by the verifier
        return {"name": "boxed_integer+harness.verify", **verifier_config()}
    return {"name": "harness.verify", **verifier_config()}


def _base_protocol(job: dict, val_rows: list, tok, *, max_new: int, seed: int) -> dict:
    """Protocol fields shared by both held-out entries (benchmark, sampling and k are set per entry)."""
    from harness.results import content_hash

    return dict(benchmark=f"{job['data']['task']}_heldout", data_sha256=content_hash(val_rows),
                problems={"n_problems": len(val_rows), "n_val": job["eval"].get("n_val"),
                          "split_seed": job["data"].get("split_seed")},
                prompt_template="held-out rows as trained (chat template, if any, applied in the rows)",
                chat_template=getattr(tok, "chat_template", None), max_gen_toks=max_new,
                verifier=_scorer(job), seeds={"eval": int(seed)}, task_version=1)


def _entry(name, job, base, corr, votes, sampling, k, *, seed, bootstrap_iters) -> tuple[dict, dict]:
    """(benchmark entry, protocol fields) of one held-out entry."""
    from harness.evaluate import metrics as M
    from harness.evaluate.record import bench_entry
    from harness.results.protocol import protocol_fields

    task = f"{job['data']['task']}_{name}"
    fields = protocol_fields(**{**base, "benchmark": task}, sampling=sampling, k=k)
    summary = M.summarize(corr, votes, greedy=name.endswith("greedy"), iters=bootstrap_iters, seed=seed)
    per_problem = [{"id": i, "n_correct": int(sum(c))} for i, c in enumerate(corr)]
    return bench_entry(task=task, k=k, summary=summary, per_problem=per_problem, protocol=fields), fields
