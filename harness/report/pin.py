"""``harness pin``: copy a checked replication into ``results/`` (committed, citable).

The card's verdict and plots go to ``results/<paper>/<tier>/``, with the analysis results it read
(``analysis/<name>.json``, from ``work/analysis/<paper>/<tier>/``); the runs and evaluations it judged go to their
shared place (``results/jobs/...``, ``results/base-evals/...``, the work dir's layout), stored once however many
cards use them. ``MANIFEST.json`` lists the sha256 of every file the replication rests on.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from harness.config import ConfigError
from harness.results import atomic_dir, atomic_write_json, file_sha256
from harness.results.packing import PACKED_KINDS, needs_packing, read_result, write_packed
from harness.results.store import base_model_key, result_files


def _copy_atomic(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.copy2(src, tmp)
    tmp.replace(dest)


def pin(paper: str, tier: str, work_dir: Path, results_dir: Path) -> Path:
    """Pin one replication and rebuild the shared files (atlas, leaderboard, report, manifest)."""
    dest = pin_files(paper, tier, work_dir, results_dir)
    rebuild(results_dir)
    return dest


MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
               "pretrain.json")


def pin_base_model(job: dict, work_dir: Path, results_dir: Path) -> Path | None:
    """Copy a smoke job's base model (``work/models/<key>/base``) to ``results/models/<key>/`` with a MANIFEST.json of
    its files' sha256 (once: an existing pinned model of the key is kept)."""
    key = base_model_key(job)
    dest, src = results_dir / "models" / key, work_dir / "models" / key / "base"
    if (dest / "MANIFEST.json").exists():
        return dest
    if not src.is_dir():
        raise ConfigError(f"base model {src} of a pinned run is missing (rerun its pretrain_smoke rule)")
    with atomic_dir(dest) as tmp:
        names = [n for n in MODEL_FILES if (src / n).is_file()]
        for n in names:
            shutil.copy2(src / n, tmp / n)
        spec = {k: job.get(k) for k in ("model", "pretrain", "data")}
        atomic_write_json(tmp / "MANIFEST.json", {"key": key, "spec": spec,
                                                  "files": {n: file_sha256(tmp / n) for n in names}})
    return dest


def listed_hashes(verdict: dict, extras: bool = True) -> set[str]:
    """Content hashes of the runs and evaluations a verdict lists (``inputs``, ``eval_inputs``) and, with ``extras``,
    of what it lists besides them (the base model's task report)."""
    out = set(verdict.get("inputs", [])) | set(verdict.get("eval_inputs", []))
    if extras and verdict.get("task_report"):
        out.add(verdict["task_report"]["content_hash"])
    return out


def analysis_files(verdict: dict, work_dir: Path) -> dict[str, Path]:
    """The analysis result files a verdict lists (``analysis_inputs``), found by content hash under the work dir:
    path to pin them at (relative to the verdict's ``analysis/`` folder) -> file. A card's own analysis
    (``work/analysis/<paper>/<tier>/<name>.json``) goes to ``<name>.json``; an analysis kept elsewhere (e.g. of a
    shared checkpoint) keeps its path relative to the work dir."""
    wanted = set(verdict.get("analysis_inputs") or [])
    if not wanted:
        return {}
    own = Path("analysis") / verdict["paper"] / verdict["tier"]
    found = {}
    for p in sorted(work_dir.rglob("*.json")):
        rel = p.relative_to(work_dir)
        if any(part.startswith(".") for part in rel.parts) or rel.parts[0] in ("verdicts", "releases"):
            continue
        try:
            r = json.loads(p.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(r, dict) and r.get("kind") == "analysis_result" and r.get("content_hash") in wanted:
            found[r["content_hash"]] = (rel.relative_to(own) if rel.is_relative_to(own) else rel, p)
    missing = wanted - set(found)
    if missing:
        raise ConfigError(f"verdict of {verdict['paper']} [{verdict['tier']}] refers to analysis results not found "
                          f"under {work_dir}: {sorted(missing)[:3]} (rerun the analysis and the verdict)")
    return {rel.as_posix(): p for rel, p in found.values()}


def check_no_pinned_run_replaced(found: dict[str, Path], work_dir: Path, results_dir: Path,
                                 card: tuple[str, str], together: frozenset = frozenset()) -> None:
    """Refuse (before anything is copied) to overwrite a pinned shared run or evaluation that another card's pinned
    verdict lists with a different file of the same path: a rerun of the same job on another machine (floats differ
    across CPUs, so trajectories and hashes do) would orphan that verdict. The card's own old verdict does not count,
    nor do those of the cards re-pinned in the same call (``together``: their new verdicts list the new files)."""
    mine = {card, *together}
    listed: dict[str, list[str]] = {}
    for p, r in result_files(results_dir):
        if r["kind"] == "verdict" and (r.get("paper"), r.get("tier")) not in mine:
            for h in listed_hashes(r):
                listed.setdefault(h, []).append(f"{r.get('paper')} [{r.get('tier')}]")
    clashes = []
    for h, p in sorted(found.items()):
        rel = p.relative_to(work_dir)
        dest = results_dir / rel
        if not dest.is_file():
            continue
        old = json.loads(dest.read_text()).get("content_hash")
        if old != h and old in listed:
            clashes.append(f"{rel} (pinned {old[:12]}, listed by {', '.join(sorted(set(listed[old])))}; "
                           f"this run {h[:12]})")
    if clashes:
        raise ConfigError(
            f"pinning {card[0]} [{card[1]}] would replace pinned runs other verdicts list: {'; '.join(clashes)}. "
            f"The same job was retrained (e.g. on another machine). Judge against the pinned run instead: "
            f"`harness pin --use-pinned --paper {card[0]} --tier {card[1]} --work-dir {work_dir}` (where the numbers "
            f"are identical), rerun snakemake (the verdict), then pin.")


def pin_files(paper: str, tier: str, work_dir: Path, results_dir: Path, checked: tuple | None = None) -> Path:
    """Copy one replication's verdict, plots and the runs/evaluations it judged into ``results_dir``. ``checked``:
    this card's entry of :func:`check_pinnable` (all cards of one call checked before any is copied); without it
    the card is checked here on its own."""
    vpath, verdict, found = checked or _pinnable(paper, tier, work_dir, results_dir)
    vdir = vpath.parent
    shared = {}
    for h, p in sorted(found.items()):
        rel = p.relative_to(work_dir)
        r = read_result(p, ConfigError)
        if r.get("kind") in PACKED_KINDS:  # metrics and per-problem lists stored packed (results.packing)
            write_packed(results_dir / rel, r, ConfigError)
        else:
            _copy_atomic(p, results_dir / rel)
        shared[rel.as_posix()] = file_sha256(results_dir / rel)
        if r.get("kind") == "train_result" and r["job"]["model"]["kind"] == "smoke":
            # the smoke base model the run started from (restored by a fresh clone)
            pin_base_model(r["job"], work_dir, results_dir)
    analyses = analysis_files(verdict, work_dir)
    dest = results_dir / paper / tier
    with atomic_dir(dest) as tmp:
        shutil.copy2(vpath, tmp / "verdict.json")
        for rel, p in sorted(analyses.items()):  # pinned next to the verdict that read them
            (tmp / "analysis" / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, tmp / "analysis" / rel)
        for png in vdir.glob("*.png"):
            shutil.copy2(png, tmp / png.name)
        manifest = {str(p.relative_to(tmp)): file_sha256(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        atomic_write_json(tmp / "MANIFEST.json", {"paper": paper, "tier": tier, "verdict_hash": verdict["content_hash"],
                                                 "files": manifest, "shared_files": shared})
    return dest


def _pinnable(paper: str, tier: str, work_dir: Path, results_dir: Path,
              together: frozenset = frozenset()) -> tuple[Path, dict, dict[str, Path]]:
    """(verdict path, verdict, content hash -> work-dir file of each result it lists), after the checks that
    nothing is missing, everything lies under jobs/ or base-evals/, and no run other verdicts list is replaced."""
    vpath = work_dir / "verdicts" / paper / tier / "verdict.json"
    if not vpath.exists():
        raise ConfigError(f"nothing to pin: {vpath} is missing (run `snakemake --config paper={paper} tier={tier}`)")
    verdict = json.loads(vpath.read_text())
    wanted = listed_hashes(verdict)
    found = {}
    for p, r in result_files(work_dir):
        if r.get("content_hash") in wanted and r["kind"] != "verdict":
            found[r["content_hash"]] = p
    missing = wanted - set(found)
    if missing:
        raise ConfigError(f"verdict {vpath} refers to results not found under {work_dir}: {sorted(missing)[:3]}")
    for h, p in sorted(found.items()):
        rel = p.relative_to(work_dir)
        if rel.parts[0] not in ("jobs", "base-evals"):
            raise ConfigError(f"{p}: a result outside {work_dir}/jobs and {work_dir}/base-evals cannot be pinned")
    check_no_pinned_run_replaced(found, work_dir, results_dir, (paper, tier), together)
    return vpath, verdict, found


def adopt_pinned(papers: list[str], tier: str, work_dir: Path, results_dir: Path) -> tuple[list[str], list[str]]:
    """``harness pin --use-pinned``: judge a card against the pinned runs and evaluations, not against the same jobs
    retrained in this work dir (a fresh work dir retrains the shared GRPO runs and base evaluations; pinning their
    new files would orphan the other cards' verdicts). Every result a card's work-dir verdict lists that has a
    pinned file at the same path with another content hash is compared with it (:func:`result_diffs`: job and
    numbers); if they are the same result, the pinned record replaces the work-dir file (the retrained one is kept
    beside it as ``<name>.retrained``), with a fresh mtime so that ``snakemake`` reruns what reads it (the verdict,
    analyses) and nothing else. A result whose numbers differ is left as it is: it is a new result (a changed
    method, or a reproducibility failure that ``harness pin --rerun`` reports). All files are compared before any
    is replaced. Returns (work-dir paths adopted, ``"<path>: <fields>"`` of those kept)."""
    from harness.claims.verdict import result_diffs
    from harness.results import content_hash

    adopt, kept = {}, {}
    for paper in papers:
        vpath = work_dir / "verdicts" / paper / tier / "verdict.json"
        if not vpath.is_file():
            raise ConfigError(f"nothing to judge against the pinned results: {vpath} is missing (run `snakemake "
                              f"--config paper={paper} tier={tier} work_dir={work_dir}`)")
        verdict = json.loads(vpath.read_text())
        wanted = listed_hashes(verdict, extras=False)
        for p, r in result_files(work_dir):
            rel = p.relative_to(work_dir)
            if r.get("content_hash") not in wanted or rel.as_posix() in adopt or not (results_dir / rel).is_file():
                continue
            pinned = read_result(results_dir / rel, ConfigError)
            if pinned.get("content_hash") == r["content_hash"]:
                continue
            if content_hash(pinned) != pinned.get("content_hash"):
                raise ConfigError(f"{results_dir / rel}: its content does not match its content hash (run "
                                  f"`harness verify-results`); nothing was replaced")
            try:
                diffs = result_diffs(pinned, r)
            except ValueError as e:
                diffs = [str(e)]
            if diffs:
                kept[rel.as_posix()] = f"{rel}: {len(diffs)} field(s) differ from the pinned file, e.g. {diffs[0]}"
            else:
                adopt[rel.as_posix()] = pinned
    for rel, pinned in sorted(adopt.items()):
        p = work_dir / rel
        _copy_atomic(p, p.with_name(p.name + ".retrained"))
        atomic_write_json(p, pinned)  # written now: newer than what reads it
    return [str(work_dir / rel) for rel in sorted(adopt)], [kept[k] for k in sorted(kept)]


def stale_verdicts(work_dir: Path, adopted: list[str], skip: set[tuple[str, str]]) -> list[tuple[str, str]]:
    """(paper, tier) of each verdict in ``work_dir`` outside ``skip`` that lists a retrained file
    :func:`adopt_pinned` just set aside (``adopted``: the paths it returned): such a verdict names results no longer
    in the work dir, so the atlas step refuses it until it is re-judged (or removed)."""
    gone = {json.loads(Path(f"{p}.retrained").read_text()).get("content_hash") for p in adopted}
    out = []
    for vpath in sorted((work_dir / "verdicts").glob("*/*/verdict.json")):
        key = (vpath.parent.parent.name, vpath.parent.name)
        if key in skip:
            continue
        v = json.loads(vpath.read_text())
        if gone & listed_hashes(v, extras=False):
            out.append(key)
    return out


def check_pinnable(papers: list[str], tier: str, work_dir: Path, results_dir: Path) -> dict[str, tuple]:
    """Check every card of one ``harness pin`` call before any is copied (so a refusal leaves results/ as it was);
    the cards may replace the runs they all list. Returns each card's (verdict path, verdict, found results), for
    :func:`pin_files`'s ``checked``."""
    together = frozenset((p, tier) for p in papers)
    return {paper: _pinnable(paper, tier, work_dir, results_dir, together) for paper in papers}


def rebuild(results_dir: Path) -> None:
    """The files every pin changes: the atlas, the leaderboard and report, the results manifest."""
    from harness.report.artifacts import build_manifest
    from harness.report.atlas import build_atlas, pinned_runs
    from harness.report.leaderboard import write as write_leaderboard

    prune_unreferenced(results_dir)
    repack(results_dir)
    build_atlas(pinned_runs(results_dir), results_dir / "atlas.json", results_dir / "entropy_atlas.png")
    write_leaderboard(results_dir)  # leaderboard.md/.json and report.html follow the pinned results
    build_manifest(results_dir)


def repack(results_dir: Path) -> list[Path]:
    """Pack the lists of pinned train and eval results stored plain (pinned before packing covered them: same
    content hash, smaller file; :mod:`harness.results.packing`) and bring the cards' ``MANIFEST.json``
    ``shared_files`` sha256 up to date. Returns the files repacked; a second call does nothing."""
    done = []
    for p in sorted([*(results_dir / "jobs").rglob("*.json"), *(results_dir / "base-evals").rglob("*.json")]):
        r = json.loads(p.read_text())
        if needs_packing(r):
            write_packed(p, r, ConfigError)
            done.append(p)
    if done:
        for m in sorted(results_dir.glob("*/*/MANIFEST.json")):
            man = json.loads(m.read_text())
            shared = {rel: file_sha256(results_dir / rel) if (results_dir / rel).is_file() else sha
                      for rel, sha in man.get("shared_files", {}).items()}
            if shared != man.get("shared_files", {}):
                atomic_write_json(m, {**man, "shared_files": shared})
    return done


def prune_unreferenced(results_dir: Path) -> list[Path]:
    """Remove shared run/evaluation files that no pinned verdict lists any more (a re-pinned card's old runs).

    The agent evaluations of ``config/agents.yaml`` (a directory with ``agent_spec.json``, rules/agents.smk) are
    results in their own right, pinned without a card: they stay."""
    referenced, shared = set(), []
    for p, r in result_files(results_dir):
        if r["kind"] == "verdict":
            referenced |= listed_hashes(r)
        elif (p.relative_to(results_dir).parts[0] in ("jobs", "base-evals")
              and not (p.parent / "agent_spec.json").is_file()):
            shared.append((p, r.get("content_hash")))
    gone = [p for p, h in shared if h not in referenced]
    for p in gone:
        p.unlink()
    keep = {base_model_key(r["job"]) for p, r in result_files(results_dir)
            if r["kind"] == "train_result" and r.get("content_hash") in referenced}
    for d in sorted((results_dir / "models").glob("*/")) if (results_dir / "models").is_dir() else []:
        if d.name not in keep:  # a base model no pinned run starts from any more
            shutil.rmtree(d)
            gone.append(d)
    for d in sorted((x for top in ("jobs", "base-evals") for x in (results_dir / top).rglob("*") if x.is_dir()),
                    key=lambda x: len(x.parts), reverse=True):
        if not any(d.iterdir()):
            d.rmdir()
    return gone
