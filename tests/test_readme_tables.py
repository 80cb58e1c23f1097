"""The README's generated tables (status, methods, overhead): up to date, and regenerated from their inputs.

``harness readme --check`` must pass on the committed tree; the generators must follow a change of their input (a
modified copy of ``benchmarks/overhead.json``, an extra registry row) and ``--check`` must see a hand edit.
"""
from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys

import pytest

from harness.config import REPO_ROOT
from harness.report import status

OVERHEAD = REPO_ROOT / status.OVERHEAD_JSON


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    from harness.methods.registry import all_methods

    return status.method_rows(all_methods().values())


def _block(text: str, begin: str, end: str) -> str:
    return text.split(begin, 1)[1].split(end, 1)[0]


def test_readme_check_passes():
    r = subprocess.run([sys.executable, "-m", "harness.face.cli", "readme", "--check"], cwd=REPO_ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_overhead_json_is_a_full_measurement():
    data = json.loads(OVERHEAD.read_text())
    assert data["kind"] == "overhead_benchmark"
    assert {"machine", "date", "steps", "repeats", "torch_threads", "command", "order"} <= set(data)
    runs = data["methods"]
    assert {"grpo", data["reference"]} <= set(runs)
    assert all(len(r["s_per_step"]) == data["repeats"] for r in runs.values())
    assert len(data["order"]) == data["repeats"] and all(sorted(o) == sorted(runs) for o in data["order"])


def test_readme_lists_every_registered_method(rows):
    text = (REPO_ROOT / "README.md").read_text()
    methods = _block(text, status.METHODS_BEGIN, status.METHODS_END)
    overhead = _block(text, status.OVERHEAD_BEGIN, status.OVERHEAD_END)
    for r in rows:
        assert f"| `{r['name']}` |" in methods
        assert f"| `{r['name']}` |" in overhead  # measured, or "not measured" until the benchmark is rerun
    assert "vanilla TRL" in overhead


def test_overhead_table_follows_its_json():
    data = json.loads(OVERHEAD.read_text())
    before = status.overhead_table(data)
    changed = copy.deepcopy(data)
    changed["methods"]["clip_cov"]["s_per_step"] = [3 * t for t in data["methods"]["grpo"]["s_per_step"]]
    after = status.overhead_table(changed)
    assert after != before
    row = next(line for line in after.splitlines() if line.startswith("| `clip_cov` |"))
    assert "| 3.00" in row and "**over**" in row


def _bench(methods: dict) -> dict:
    """A bench_overhead.py JSON with two interleaved repeats of the given methods."""
    return {"date": "2026-01-01T00:00:00Z", "command": "bench", "steps": 40, "warmup_steps": 4, "repeats": 2,
            "torch_threads": 1, "baseline": "grpo", "reference": "vanilla_trl",
            "machine": {"cpu": "x", "cores": 2, "device": "cpu", "torch": "t", "trl": "v",
                        "loadavg_1min_start": 0.1, "loadavg_1min_end": 0.2},
            "methods": methods}


def test_overhead_ratios_are_per_repeat():
    data = _bench({"grpo": {"s_per_step": [1.0, 2.0], "limit": None},
                   "m": {"s_per_step": [1.1, 2.4], "limit": 1.15},
                   "vanilla_trl": {"s_per_step": [1.0, 1.0], "limit": None}})
    lines = status.overhead_table(data).splitlines()
    assert lines.index(next(x for x in lines if x.startswith("| vanilla TRL"))) < lines.index(
        next(x for x in lines if x.startswith("| `grpo`")))
    m = next(x for x in lines if x.startswith("| `m` |"))
    # mean 1.75 s (1.100-2.400); x grpo 3.5/3 = 1.17 (per repeat 1.10, 1.20); x vanilla 3.5/2 = 1.75 (1.10-2.40)
    assert m == "| `m` | 1.750 (1.100-2.400) | 1.17 (1.10-1.20) | 1.75 (1.10-2.40) | 1.15 |"  # not over in every repeat
    data["methods"]["m"]["s_per_step"] = [1.2, 2.4]
    m = next(x for x in status.overhead_table(data).splitlines() if x.startswith("| `m` |"))
    assert m.endswith("| 1.15 **over** |")


def test_overhead_table_shows_tokens_per_update_when_measured():
    """Benchmarks since issue 13 record completion tokens per generation batch; the column appears only then."""
    data = _bench({"grpo": {"s_per_step": [1.0, 2.0], "limit": None}, "m": {"s_per_step": [1.1, 2.4], "limit": None}})
    assert "tokens / update" not in status.overhead_table(data)
    data["methods"]["grpo"]["tokens_per_update"] = [100.0, 110.0]
    data["methods"]["m"]["tokens_per_update"] = [300.0, None]
    lines = status.overhead_table(data, ["grpo", "m", "new"]).splitlines()
    assert any(x.endswith("| completion tokens / update |") for x in lines)
    assert next(x for x in lines if x.startswith("| `grpo` |")).endswith("| 105 |")
    assert next(x for x in lines if x.startswith("| `m` |")).endswith("|  | 300 |")  # no limit; the one measured run
    assert next(x for x in lines if x.startswith("| `new` |")).count("|") == 7  # same columns as the header


def test_update_readme_regenerates_from_a_modified_json(tmp_path, rows):
    readme, overhead = tmp_path / "README.md", tmp_path / "overhead.json"
    shutil.copy(REPO_ROOT / "README.md", readme)
    for f in status.overhead_files(OVERHEAD)[1:]:  # the later runs beside it
        shutil.copy(f, tmp_path / f.name)
    data = json.loads(OVERHEAD.read_text())
    overhead.write_text(json.dumps(data))
    assert not status.update_readme(check=True, readme=readme, overhead=overhead, methods=rows)
    data["methods"]["grpo"]["s_per_step"] = [t * 2 for t in data["methods"]["grpo"]["s_per_step"]]
    overhead.write_text(json.dumps(data))
    assert status.update_readme(check=True, readme=readme, overhead=overhead, methods=rows)  # stale
    assert readme.read_text() == (REPO_ROOT / "README.md").read_text()  # --check writes nothing
    assert status.update_readme(readme=readme, overhead=overhead, methods=rows)
    new = _block(readme.read_text(), status.OVERHEAD_BEGIN, status.OVERHEAD_END)
    assert new.strip() == status.overhead_section(status.overhead_files(overhead), [r["name"] for r in rows])
    assert status.overhead_table(data).split("\n\n")[0] in new
    assert not status.update_readme(check=True, readme=readme, overhead=overhead, methods=rows)


def test_methods_table_follows_the_registry(tmp_path, rows):
    readme = tmp_path / "README.md"
    shutil.copy(REPO_ROOT / "README.md", readme)
    extra = rows + [{"name": "toy", "point": "data+loss", "paper": "toy_paper", "source": "a | b"}]
    assert status.update_readme(readme=readme, methods=extra)
    table = _block(readme.read_text(), status.METHODS_BEGIN, status.METHODS_END)
    assert "| `toy` | toy_paper | `data`, `loss` | a \\| b |" in table
    overhead = _block(readme.read_text(), status.OVERHEAD_BEGIN, status.OVERHEAD_END)
    assert "| `toy` | not measured" in overhead


def test_hand_edit_is_stale(tmp_path, rows):
    readme = tmp_path / "README.md"
    text = (REPO_ROOT / "README.md").read_text()
    grpo_row = next(x for x in _block(text, status.OVERHEAD_BEGIN, status.OVERHEAD_END).splitlines()
                    if x.startswith("| `grpo` |"))
    readme.write_text(text.replace(grpo_row, "| `grpo` | 0.100 | 1.00 | 1.00 | |"))
    assert status.update_readme(check=True, readme=readme, methods=rows)


def test_missing_markers_or_json_fail_with_a_message(tmp_path, rows):
    readme = tmp_path / "README.md"
    readme.write_text((REPO_ROOT / "README.md").read_text().replace(status.OVERHEAD_END, ""))
    with pytest.raises(SystemExit, match="overhead-table"):
        status.update_readme(check=True, readme=readme, methods=rows)
    with pytest.raises(SystemExit, match="bench_overhead.py"):
        status.update_readme(check=True, readme=readme, methods=rows, overhead=tmp_path / "none.json")


def test_later_overhead_runs_get_their_own_tables(tmp_path):
    """A later run over newly registered methods (``overhead_*.json`` beside ``overhead.json``) is its own table:
    ratios are within one interleaved run; what no run measured is listed once, in the last table."""
    first = _bench({"grpo": {"s_per_step": [1.0, 1.0], "limit": None}, "a": {"s_per_step": [1.1, 1.1], "limit": 1.15}})
    later = _bench({"grpo": {"s_per_step": [2.0, 2.0], "limit": None}, "b": {"s_per_step": [3.0, 3.0], "limit": 1.1}})
    main = tmp_path / "overhead.json"
    main.write_text(json.dumps(first))
    (tmp_path / "overhead_later.json").write_text(json.dumps(later))
    (tmp_path / "other.json").write_text("{")  # not an overhead run: not read
    paths = status.overhead_files(main)
    assert [p.name for p in paths] == ["overhead.json", "overhead_later.json"]
    text = status.overhead_section(paths, ["grpo", "a", "b", "new"])
    one, two = text.split("**Run 2 of 2**")
    assert "**Run 1 of 2** (`" in one and "| `a` | 1.100 (1.100-1.100) | 1.10 (1.10-1.10) |" in one
    assert "| `b` | 3.000 (3.000-3.000) | 1.50 (1.50-1.50) |" in two and "1.1 **over**" in two  # b against run 2's grpo
    assert "| `new` | not measured" in two and "not measured" not in one and text.count("| `new` |") == 1
    assert status.overhead_section([main], ["a", "new"]) == status.overhead_table(first, ["a", "new"])
    # a method the benchmark skipped shows its reason, once, not "rerun the benchmark"
    later["skipped"] = {"new": "trained with TRL's DPOTrainer: | no GRPO step\nto compare"}
    (tmp_path / "overhead_later.json").write_text(json.dumps(later))
    text = status.overhead_section(status.overhead_files(main), ["grpo", "a", "b", "new"])
    assert "| `new` | not measured here: trained with TRL's DPOTrainer: \\| no GRPO step to compare | | | |" in text
    assert text.count("| `new` |") == 1
    # a method one run skipped and another measured: the skipped row names the run that measured it
    later["skipped"] = {"a": "its task is 'x'"}
    (tmp_path / "overhead_later.json").write_text(json.dumps(later))
    text = status.overhead_section(status.overhead_files(main), ["grpo", "a", "b"])
    assert "| `a` | not measured here: its task is 'x'; measured in run 1 |" in text
    (tmp_path / "overhead_later.json").write_text("{")
    with pytest.raises(SystemExit, match="overhead_later.json"):
        status.overhead_section(status.overhead_files(main), [])


def test_the_benchmark_skips_what_it_cannot_compare_with_grpo(tmp_path):
    """bench_overhead.py names why a method is not measured instead of aborting the run: another trainer (no GRPO
    step), or another task than the grpo baseline's (another base model: --baseline-card measures those)."""
    import importlib.util
    from types import SimpleNamespace

    spec = importlib.util.spec_from_file_location("bench_overhead", REPO_ROOT / "benchmarks" / "bench_overhead.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    base = {"data": {"task": "addition"}}
    assert bench.not_comparable(SimpleNamespace(trainer="grpo"), base, base) is None
    assert bench.not_comparable(SimpleNamespace(trainer="dpo"), base, base) == \
        "trained with TRL's DPOTrainer: no GRPO step to compare"
    assert bench.not_comparable(SimpleNamespace(trainer="grpo"), {"data": {"task": "instruct"}}, base) == \
        "its task is 'instruct', the grpo baseline's 'addition' (another base model)"
    # a method with an upstream input gets its path from --work-dir, as harness train gives it; else the reason
    job = {"hparams": {"beta": 0.05}, "upstream": {"prm_dir": {"kind": "prm", "path": "upstream/prm/k1/model"}}}
    assert bench.with_upstream(dict(job), None).startswith("needs an upstream input (prm_dir: upstream/prm/k1/model)")
    assert bench.with_upstream(dict(job), str(tmp_path)) == \
        f"upstream input prm_dir missing: {tmp_path}/upstream/prm/k1/model (made by the DAG's prm rule)"
    (tmp_path / "upstream" / "prm" / "k1" / "model").mkdir(parents=True)
    given = dict(job)
    assert bench.with_upstream(given, str(tmp_path)) is None
    assert given["hparams"] == {"beta": 0.05, "prm_dir": str((tmp_path / "upstream/prm/k1/model").resolve())}
    assert job["hparams"] == {"beta": 0.05}  # the resolved job's own dict is not changed
    # the recorded command: shell-quoted, without the note (the README shows it on its own)
    assert bench.command_line(["--steps", "24", "--note", "why: x", "--out", "a b.json", "--note=y"]) == \
        "python benchmarks/bench_overhead.py --steps 24 --out 'a b.json'"


def test_gpu_check_block_follows_its_json(tmp_path, rows):
    """The GPU check's block is the table of benchmarks/gpu_check.json, with its date, device and command; without
    the file it says the check has not run."""
    readme, gpu = tmp_path / "README.md", tmp_path / "gpu_check.json"
    shutil.copy(REPO_ROOT / "README.md", readme)
    text = status.gpu_check_section(tmp_path / "absent.json")
    assert text.startswith("Not run yet") and "benchmarks/gpu_check.py" in text
    data = {"date": "2030-01-02", "device": "GPU X (80 GiB)", "command": "python benchmarks/gpu_check.py --x",
            "table": "gpu_check: a\nmeasure  value\nrow  1 s"}
    gpu.write_text(json.dumps(data))
    assert status.update_readme(readme=readme, methods=rows, gpu_check=gpu)
    block = _block(readme.read_text(), status.GPU_BEGIN, status.GPU_END)
    assert "Measured 2030-01-02 on GPU X (80 GiB): `python benchmarks/gpu_check.py --x`." in block
    assert "```\ngpu_check: a\nmeasure  value\nrow  1 s\n```" in block
    gpu.write_text(json.dumps({k: v for k, v in data.items() if k != "table"}))
    with pytest.raises(SystemExit, match="cannot read the GPU check"):
        status.update_readme(readme=readme, methods=rows, gpu_check=gpu)
