"""Chat rows for supervised fine-tuning, read and encoded as LLaMA-Factory does (the cold start before RL:
:mod:`harness.train.cold_start` trains on them; the block's settings: :class:`ColdStartSpec`).

Ported from the LLaMA-Factory (LF) vendored in RUC-NLPIR/ARPO (read at multi-agent-deep-research/ARPO@ff66660):

- **rows** (LF ``data/converter.py``): ``sharegpt`` rows (SharegptDatasetConverter; ARPO's dataset_info columns
  ``messages: conversations``, ``system: system``): a list of ``{from, value}`` messages. A leading ``system`` message
  gives the system prompt, else the ``system`` column does. Roles alternate: human or observation at even places,
  gpt (or function_call) at odd places, and the count is even. Otherwise LF logs the row and skips it. Here the
  skipped rows are counted by reason. ``function_call`` messages (LF formats them as tool-call JSON) raise an error:
  not ported.
  ``alpaca`` rows (LF's default formatting, AlpacaDatasetConverter): one user turn, ``instruction`` and ``input``
  joined by a newline, and the response ``output``; the system prompt only from a column the block names.
- **encoding** (LF ``data/template.py`` Template._encode with template ``qwen``; ``processor/supervised.py``): each
  message is rendered by its role's slot. The first message is preceded by the system slot (the row's system prompt,
  or the template's default when it has none). Each slot is tokenized on its own, without special tokens. Every
  (prompt, response) pair is truncated by LF's ``infer_seqlen`` against what is left of ``cutoff_len``. Labels cover
  every response; the prompts are masked (``train_on_prompt: false``, ``mask_history: false``).
"""
from __future__ import annotations

import dataclasses
import difflib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from harness.config import ConfigError
from harness.config.tiers import REQUIRED, ResourcesSpec, SettingError, parse, setting


@dataclass(frozen=True)
class ChatFormat:
    """An LF template's slots (``{{content}}`` is the message; ``{{idx}}`` the turn index, user slot only)."""

    user: str
    assistant: str
    system: str
    observation: str
    default_system: str
    #: the end-of-sequence token the template puts in the tokenizer (LF ``replace_eos``: its first stop word)
    eos: str | None = None


def fix_special_tokens(tok, fmt: ChatFormat) -> None:
    """LF Template.fix_special_tokens for a template without further stop words: the template's EOS replaces the
    tokenizer's (a token it lacks is an error here: LF would add it and ask for a resized vocabulary), an absent pad
    token becomes the EOS."""
    if fmt.eos is not None and tok.eos_token != fmt.eos:
        if fmt.eos not in tok.get_vocab():
            raise ConfigError(f"the template's end token {fmt.eos!r} is not in the tokenizer's vocabulary")
        tok.eos_token = fmt.eos
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token


#: LF templates ported (LF template.py ``register_template(name="qwen", ...)``)
TEMPLATES = {
    "qwen": ChatFormat(
        user="<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n",
        assistant="{{content}}<|im_end|>\n",
        system="<|im_start|>system\n{{content}}<|im_end|>\n",
        observation="<|im_start|>user\n<tool_response>\n{{content}}\n</tool_response><|im_end|>\n"
                    "<|im_start|>assistant\n",
        default_system="You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
        eos="<|im_end|>"),  # stop_words=["<|im_end|>"], replace_eos=True
}

#: sharegpt tags (LF DatasetAttr defaults) -> role
TAGS = {"human": "user", "gpt": "assistant", "observation": "observation", "function_call": "function",
        "system": "system"}


@dataclass(frozen=True)
class ColdStartSpec:
    """A model block's ``cold_start``: the SFT stage before RL (named ones: config/cold_starts.yaml)."""

    data: dict = setting(REQUIRED, "spec", "the chat rows: {hub: <dataset id>, split: train, file: <path under the "
                         "data dir, .json or .jsonl; used when present, else the hub>, formatting: sharegpt | "
                         "alpaca, messages: <sharegpt column, default conversations>, system: <column of the system "
                         "prompt; absent: none>}", "LLaMA-Factory dataset_info.json")
    trl: dict = setting(REQUIRED, "spec", "SFTConfig fields (optimiser, schedule, batch, precision)",
                        "arpo_train_sft/yaml/qwen.yaml ### train")
    name: str | None = setting(None, "name", "the recipe's name in config/cold_starts.yaml (null: stated inline)",
                               "harness")
    template: str = setting("qwen", "choice", "the LLaMA-Factory template that renders the rows (ported: qwen)",
                            "arpo_train_sft/yaml/qwen.yaml template: qwen")
    cutoff_len: int = setting(15000, "tokens", "longest encoded row; LF's infer_seqlen shortens each prompt/response "
                              "pair to fit", "arpo_train_sft/yaml/qwen.yaml cutoff_len: 15000")
    max_samples: int | None = setting(1000000, "rows", "first rows read (null: all)",
                                      "arpo_train_sft/yaml/qwen.yaml max_samples: 1000000")
    seed: int = setting(42, "seed", "the Trainer's seed (the order its sampler reads the rows in)",
                        "transformers TrainingArguments default (the yaml sets none)")
    resources: dict | None = setting(None, "spec", "processes and accelerate config of the SFT job (the tier's "
                                     "resources block's fields; null: one process)",
                                     "arpo_train_sft/sft_train.sh: torchrun, 1 node x 8 processes, DeepSpeed ZeRO-3")


#: SFTConfig fields the stage sets itself
HARNESS_SET = ("output_dir", "seed", "data_seed", "report_to", "save_strategy", "use_cpu", "remove_unused_columns",
               "max_length", "packing", "completion_only_loss", "assistant_only_loss", "dataset_text_field")
DATA_KEYS = ("hub", "split", "file", "formatting", "messages", "system")
#: LF dataset_info ``formatting`` values ported (LF's default: alpaca)
FORMATTINGS = ("sharegpt", "alpaca")


def check_spec(block: dict, where: str) -> ColdStartSpec:
    """The ``cold_start`` block parsed and checked (unknown names fail with the valid ones)."""
    try:
        spec = parse(ColdStartSpec, block, where)
        res = parse(ResourcesSpec, spec.resources, f"{where}/resources")
    except SettingError as e:
        raise ConfigError(str(e)) from None
    if res.nodes != 1:
        raise ConfigError(f"{where}/resources: a cold start runs on one node, got nodes {res.nodes}")
    if spec.template not in TEMPLATES:
        raise ConfigError(f"{where}/template: unknown template {spec.template!r}; valid: {', '.join(TEMPLATES)}")
    bad = sorted(set(spec.data) - set(DATA_KEYS))
    if bad:
        raise ConfigError(f"{where}/data: unknown key(s) {', '.join(bad)}; valid: {', '.join(DATA_KEYS)}")
    if spec.data.get("formatting", "sharegpt") not in FORMATTINGS:
        raise ConfigError(f"{where}/data/formatting: unknown formatting {spec.data['formatting']!r}; valid: "
                          f"{', '.join(FORMATTINGS)}")
    if spec.data.get("formatting") == "alpaca" and "messages" in spec.data:
        raise ConfigError(f"{where}/data/messages: alpaca rows have no message list (instruction, input, output)")
    if not (spec.data.get("hub") or spec.data.get("file")):
        raise ConfigError(f"{where}/data: give a hub dataset id (hub) or a file under the data dir (file)")
    if spec.cutoff_len < 2:
        raise ConfigError(f"{where}/cutoff_len must be >= 2, got {spec.cutoff_len}")
    from trl import SFTConfig

    valid = {f.name for f in dataclasses.fields(SFTConfig)} - set(HARNESS_SET)
    for k in spec.trl:
        if k not in valid:
            hint = difflib.get_close_matches(k, sorted(valid), n=1)
            why = "the stage sets it" if k in HARNESS_SET else "not an SFTConfig field"
            raise ConfigError(f"{where}/trl: {k!r}: {why}" + (f" (did you mean {hint[0]!r}?)" if hint else ""))
    return spec


# ------------------------------------------------------------------------------------------------ rows ------
def to_messages(row: dict, data: dict) -> tuple[str, list[dict]] | str:
    """A row as the data block's ``formatting`` reads it (LF dataset_info: ``sharegpt`` with the ``messages`` and
    ``system`` columns it names, or ``alpaca``, LF's default), or the reason LF skips it."""
    if data.get("formatting", "sharegpt") == "alpaca":
        return alpaca(row, system=data.get("system"))
    return align(row, messages=data.get("messages", "conversations"), system=data.get("system"))


def alpaca(row: dict, *, system: str | None = None) -> tuple[str, list[dict]] | str:
    """LF AlpacaDatasetConverter with its default columns: ``history`` pairs are not read (no column named), the user
    turn is ``instruction`` and ``input`` joined by a newline (the empty ones left out), the response ``output``;
    the system prompt is the ``system`` column only when the block names one. A row whose ``output`` is not text has
    no response and LF drops it."""
    if not {"instruction", "output"} & set(row):
        raise ConfigError(f"row has neither instruction nor output (keys: {', '.join(map(str, row))}); "
                          f"an alpaca row needs them (a sharegpt row: data.formatting: sharegpt)")
    query = "\n".join(str(row[k]) for k in ("instruction", "input") if row.get(k))
    if not isinstance(row.get("output"), str):
        return "no response"
    return (row.get(system) or "") if system else "", [{"role": "user", "content": query},
                                                       {"role": "assistant", "content": row["output"]}]


def align(row: dict, *, messages: str = "conversations", system: str | None = "system"
          ) -> tuple[str, list[dict]] | str:
    """``(system prompt, [{role, content}])`` of a sharegpt row as LF's converter aligns it, or the reason LF skips
    it (``"invalid role tag"``, ``"invalid message count"``); ``system``: the system prompt's column (None: none)."""
    msgs = row.get(messages)
    if not isinstance(msgs, list):
        hint = " (an alpaca row: data.formatting: alpaca)" if "instruction" in row or "output" in row else ""
        raise ConfigError(f"row has no message list {messages!r} (keys: {', '.join(map(str, row))}){hint}")
    if msgs and msgs[0].get("from") == "system":
        sys_prompt, msgs = msgs[0].get("value", ""), msgs[1:]
    else:
        sys_prompt = (row.get(system) or "") if system else ""
    out = []
    for i, m in enumerate(msgs):
        tag = m.get("from")
        if tag == "function_call":
            raise ConfigError("function_call messages are not ported (LLaMA-Factory renders them as tool-call JSON); "
                              "valid tags here: human, gpt, observation, system")
        if tag not in (("human", "observation"), ("gpt",))[i % 2]:
            return "invalid role tag"
        out.append({"role": TAGS[tag], "content": m.get("value", "")})
    if len(out) % 2:
        return "invalid message count"
    if not out:
        return "no messages"
    return sys_prompt, out


def infer_seqlen(source_len: int, target_len: int, cutoff_len: int) -> tuple[int, int]:
    """LF processor_utils.infer_seqlen: the lengths a (prompt, response) pair is cut to, to fit ``cutoff_len``."""
    if target_len * 2 < cutoff_len:
        max_target = cutoff_len
    elif source_len * 2 < cutoff_len:
        max_target = cutoff_len - source_len
    else:
        max_target = int(cutoff_len * (target_len / (source_len + target_len)))
    new_target = min(max_target, target_len)
    new_source = min(max(cutoff_len - new_target, 0), source_len)
    return new_source, new_target


def _fill(slot: str, **kw: str) -> str:
    for name, value in kw.items():  # LF StringFormatter.apply: first occurrence of each placeholder, in order
        slot = slot.replace("{{" + name + "}}", value, 1)
    return slot


def encode(tok, fmt: ChatFormat, system: str, messages: list[dict], cutoff_len: int) -> dict:
    """``input_ids`` and ``labels`` (-100 on prompts) of one aligned row, as LF's supervised processor builds them;
    ``truncated``: whether ``cutoff_len`` cut anything."""
    system = system or fmt.default_system
    encoded = []
    for i, m in enumerate(messages):
        slots = [_fill(fmt.system, content=system)] if i == 0 and system else []
        if m["role"] == "user":
            slots.append(_fill(fmt.user, content=m["content"], idx=str(i // 2)))
        elif m["role"] == "assistant":
            slots.append(_fill(fmt.assistant, content=m["content"]))
        else:
            slots.append(_fill(fmt.observation, content=m["content"]))
        encoded.append([t for s in slots if s for t in tok.encode(s, add_special_tokens=False)])
    ids, labels, total, cut = [], [], 0, False
    for src, tgt in zip(encoded[0::2], encoded[1::2]):
        if total >= cutoff_len:
            cut = True
            break
        s_len, t_len = infer_seqlen(len(src), len(tgt), cutoff_len - total)
        cut = cut or s_len < len(src) or t_len < len(tgt)
        total += s_len + t_len
        ids += src[:s_len] + tgt[:t_len]
        labels += [-100] * s_len + tgt[:t_len]
    return {"input_ids": ids, "labels": labels, "truncated": cut}


def read_rows(data: dict, data_dir: Path, max_samples: int | None) -> tuple[list[dict], dict]:
    """The raw rows (a local file under ``data_dir`` when it exists, else the hub) and where they came from."""
    from harness.results import file_sha256

    path = Path(data_dir) / data["file"] if data.get("file") else None
    if path is not None and path.is_file():
        if path.suffix == ".jsonl":
            from harness.results import jsonl_file

            rows = [rec for _, rec in jsonl_file(path, ConfigError)]
        else:
            try:
                rows = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise ConfigError(f"{path}:{e.lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(rows, list):
                raise ConfigError(f"{path}: expected a JSON list of rows, got {type(rows).__name__}")
        source = {"file": str(data["file"]), "sha256": file_sha256(path)}
    elif data.get("hub"):
        from datasets import load_dataset

        try:
            ds = load_dataset(data["hub"], split=data.get("split") or "train")
        except Exception as e:  # noqa: BLE001 (offline, gated, missing: one message)
            where = f"no file {path} and " if path is not None else ""
            raise ConfigError(f"cold start: {where}cannot load {data['hub']!r} from the hub "
                              f"({type(e).__name__}: {str(e)[:200]})") from None
        rows = list(ds)
        source = {"hub": data["hub"], "split": data.get("split") or "train",
                  "fingerprint": getattr(ds, "_fingerprint", None)}
    else:
        raise ConfigError(f"cold start: no file {path} and no hub id to load the rows from")
    if max_samples is not None:
        rows = rows[:max_samples]
    return rows, source


def encoded_rows(rows: list[dict], tok, spec: ColdStartSpec) -> tuple[list[dict], dict]:
    """The trainable rows and what happened to the others (LF's skips by reason, truncations)."""
    fmt = TEMPLATES[spec.template]
    out, skipped, truncated = [], Counter(), 0
    for i, row in enumerate(rows):
        try:
            aligned = to_messages(row, spec.data)
        except ConfigError as e:
            raise ConfigError(f"cold start row {i}: {e}") from None
        if isinstance(aligned, str):
            skipped[aligned] += 1
            continue
        enc = encode(tok, fmt, *aligned, spec.cutoff_len)
        truncated += enc.pop("truncated")
        out.append(enc)
    stats = {"rows_read": len(rows), "rows_trained": len(out), "skipped": dict(sorted(skipped.items())),
             "truncated": truncated, "tokens": sum(len(r["input_ids"]) for r in out),
             "label_tokens": sum(t != -100 for r in out for t in r["labels"])}
    return out, stats
