"""The SFT cold start before RL (harness/data/chat_sft.py, harness/train/cold_start.py): LLaMA-Factory's sharegpt rows and qwen template as
ported, hand-derived; one real SFTTrainer run on a tiny model; the named recipe in the cards; the DAG's one
cold-start job shared by arpo and aepo_agentic."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.config import ConfigError
from harness.data import chat_sft as C
from harness.train.cold_start import run_cold_start

QWEN = C.TEMPLATES["qwen"]


class CharTok:
    """Encodes text one id per character (the encoding's structure is what these tests read)."""

    def encode(self, text, add_special_tokens=False):
        assert add_special_tokens is False
        return [ord(c) for c in text]


def _text(ids):
    return "".join(chr(i) for i in ids)


def row(*msgs, system=None):
    r = {"conversations": [{"from": f, "value": v} for f, v in msgs]}
    if system is not None:
        r["system"] = system
    return r


# --- rows (LF converter.py SharegptDatasetConverter) --------------------------------------------------------------

def test_align_takes_the_system_prompt_from_a_leading_message_else_the_column():
    assert C.align(row(("human", "q"), ("gpt", "a"), system="S")) == (
        "S", [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}])
    assert C.align(row(("system", "T"), ("human", "q"), ("gpt", "a"), system="S"))[0] == "T"
    assert C.align(row(("human", "q"), ("gpt", "a")))[0] == ""
    assert C.align(row(("human", "q"), ("gpt", "a"), ("observation", "o"), ("gpt", "b")))[1][2]["role"] == "observation"


@pytest.mark.parametrize("msgs,why", [
    ((("gpt", "a"), ("human", "q")), "invalid role tag"),
    ((("human", "q"), ("human", "q2")), "invalid role tag"),
    ((("human", "q"), ("gpt", "a"), ("human", "q2")), "invalid message count"),
    ((("human", "q"), ("observation", "o")), "invalid role tag"),
    ((), "no messages"),
])
def test_rows_lf_skips_are_named(msgs, why):
    assert C.align(row(*msgs)) == why


def test_function_calls_are_refused_not_mangled():
    with pytest.raises(ConfigError, match="function_call messages are not ported"):
        C.align(row(("human", "q"), ("function_call", "{}")))
    with pytest.raises(ConfigError, match="no message list 'conversations'"):
        C.align({"messages": []})


def test_alpaca_rows_are_one_user_turn_and_the_output():
    r = {"instruction": "Add.", "input": "2+3", "output": "5", "system": "ignored unless named", "history": [["a", "b"]]}
    assert C.to_messages(r, {"formatting": "alpaca"}) == (
        "", [{"role": "user", "content": "Add.\n2+3"}, {"role": "assistant", "content": "5"}])
    assert C.to_messages(r, {"formatting": "alpaca", "system": "system"})[0] == "ignored unless named"
    assert C.to_messages({"instruction": "Q", "input": "", "output": "A"}, {"formatting": "alpaca"})[1][0] == {
        "role": "user", "content": "Q"}
    assert C.to_messages({"instruction": "Q", "output": None}, {"formatting": "alpaca"}) == "no response"
    with pytest.raises(ConfigError, match="neither instruction nor output .*data.formatting: sharegpt"):
        C.to_messages(row(("human", "q"), ("gpt", "a")), {"formatting": "alpaca"})
    with pytest.raises(ConfigError, match="no message list 'conversations' .*data.formatting: alpaca"):
        C.to_messages(r, {})
    # sharegpt reads the system column only where the block names it (ARPO's dataset_info does)
    assert C.to_messages(row(("human", "q"), ("gpt", "a"), system="S"), {"system": "system"})[0] == "S"
    assert C.to_messages(row(("human", "q"), ("gpt", "a"), system="S"), {})[0] == ""


# --- encoding (LF template.py Template._encode, qwen; processor/supervised.py) -------------------------------------

def test_encoding_renders_the_qwen_slots_and_labels_every_response():
    system, msgs = C.align(row(("human", "Q1"), ("gpt", "A1"), ("observation", "R"), ("gpt", "A2")))
    enc = C.encode(CharTok(), QWEN, system, msgs, cutoff_len=10_000)
    text = _text(enc["input_ids"])
    assert text == ("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
                    "<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\n" "A1<|im_end|>\n"
                    "<|im_start|>user\n<tool_response>\nR\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
                    "A2<|im_end|>\n")
    trained = _text(t for t in enc["labels"] if t != -100)
    assert trained == "A1<|im_end|>\nA2<|im_end|>\n"  # both responses, the end token and newline included
    assert len(enc["labels"]) == len(enc["input_ids"]) and enc["truncated"] is False
    own = C.encode(CharTok(), QWEN, "Be brief.", msgs, cutoff_len=10_000)
    assert _text(own["input_ids"]).startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nQ1")


def test_user_placeholders_are_filled_in_lf_order():
    # LF's StringFormatter replaces {{content}} first, then {{idx}} (first occurrence each): a user message that holds
    # the text {{idx}} gets the turn index, as the authors' data would have
    _, msgs = C.align(row(("human", "a"), ("gpt", "b"), ("human", "x{{idx}}"), ("gpt", "c")))
    text = _text(C.encode(CharTok(), QWEN, "S", msgs, 10_000)["input_ids"])
    assert "user\nx1<|im_end|>" in text


@pytest.mark.parametrize("src,tgt,cut,expected", [
    (10, 4, 100, (10, 4)),       # fits
    (50, 10, 30, (20, 10)),      # short response: the prompt gives way
    (10, 50, 30, (10, 20)),      # short prompt: the response gives way
    (40, 20, 30, (20, 10)),      # both long: shared in proportion, int(30 * 20/60) = 10
    (40, 30, 35, (20, 15)),      # int(35 * 30/70) = 15
])
def test_infer_seqlen_is_lfs(src, tgt, cut, expected):
    assert C.infer_seqlen(src, tgt, cut) == expected


def test_truncation_cuts_each_pair_against_what_is_left_and_drops_later_pairs():
    _, msgs = C.align(row(("human", "q" * 5), ("gpt", "a" * 50), ("human", "r"), ("gpt", "b")))
    fmt = C.ChatFormat(user="{{content}}", assistant="{{content}}", system="", observation="{{content}}",
                       default_system="")
    enc = C.encode(CharTok(), fmt, "", msgs, cutoff_len=30)
    # pair 1: target 50 * 2 >= 30, source 5 * 2 < 30 -> target cut to 25, source 5; the budget is spent: pair 2 dropped
    assert _text(enc["input_ids"]) == "q" * 5 + "a" * 25 and enc["truncated"] is True
    assert enc["labels"] == [-100] * 5 + [ord("a")] * 25


def test_rows_are_counted_by_what_happened_to_them():
    spec = C.check_spec({"data": {"file": "x.json"}, "trl": {}, "cutoff_len": 40}, "t")
    rows = [row(("human", "q"), ("gpt", "a")), row(("gpt", "a")), row(("human", "q" * 30), ("gpt", "a" * 30)),
            row(("human", "q"))]
    fmt = C.ChatFormat(user="{{content}}", assistant="{{content}}", system="", observation="{{content}}",
                       default_system="")
    C.TEMPLATES["plain_test"] = fmt
    try:
        _, stats = C.encoded_rows(rows, CharTok(), C.ColdStartSpec(**{**spec.__dict__, "template": "plain_test"}))
    finally:
        del C.TEMPLATES["plain_test"]
    assert stats["rows_read"] == 4 and stats["rows_trained"] == 2 and stats["truncated"] == 1
    assert stats["skipped"] == {"invalid message count": 1, "invalid role tag": 1}
    assert stats["label_tokens"] == 1 + 20 and stats["tokens"] == 2 + 40


def test_the_template_end_token_replaces_the_tokenizers_as_lf_does():
    class Tok:
        eos_token, pad_token, vocab = "<|endoftext|>", None, {"<|endoftext|>": 0, "<|im_end|>": 1}

        @property
        def pad_token_id(self):
            return None if self.pad_token is None else self.vocab[self.pad_token]

        def get_vocab(self):
            return self.vocab

    t = Tok()
    C.fix_special_tokens(t, QWEN)  # a base model's tokenizer: LF's qwen template makes <|im_end|> the EOS
    assert (t.eos_token, t.pad_token) == ("<|im_end|>", "<|im_end|>")
    t = Tok()
    t.vocab = {"<|endoftext|>": 0}
    with pytest.raises(ConfigError, match="end token '<\\|im_end\\|>' is not in the tokenizer's vocabulary"):
        C.fix_special_tokens(t, QWEN)


# --- the block -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("block,msg", [
    ({"trl": {}}, "missing required setting"),
    ({"data": {"hub": "a/b"}, "trl": {}, "templte": "qwen"}, "unknown setting 'templte' .*did you mean 'template'"),
    ({"data": {"hub": "a/b"}, "trl": {}, "template": "llama3"}, "unknown template 'llama3'; valid: qwen"),
    ({"data": {"hub": "a/b", "colums": 1}, "trl": {}}, "unknown key.*colums; valid: hub, split, file"),
    ({"data": {}, "trl": {}}, "give a hub dataset id"),
    ({"data": {"hub": "a/b"}, "trl": {"learning_rat": 1e-5}}, "not an SFTConfig field .*'learning_rate'"),
    ({"data": {"hub": "a/b", "formatting": "openai"}, "trl": {}}, "unknown formatting 'openai'; valid: sharegpt, alpaca"),
    ({"data": {"hub": "a/b", "formatting": "alpaca", "messages": "c"}, "trl": {}}, "alpaca rows have no message list"),
    ({"data": {"hub": "a/b"}, "trl": {"max_length": 10}}, "'max_length': the stage sets it"),
    ({"data": {"hub": "a/b"}, "trl": {}, "resources": {"nodes": 2, "gpus": 8}}, "runs on one node"),
    ({"data": {"hub": "a/b"}, "trl": {}, "resources": {"gpus": 0, "accelerate_config": "zero3"}}, "needs GPUs"),
])
def test_bad_blocks_fail_naming_the_setting(block, msg):
    from harness.plan.launch import cold_start_launch

    with pytest.raises(ConfigError, match=msg):
        C.check_spec(block, "model/cold_start")
        cold_start_launch(block, "model/cold_start")


def test_the_cards_name_one_recipe_and_share_one_base_model():
    from harness.config import load_card
    from harness.plan import resolve_job
    from harness.results.store import base_model_key

    for paper in ("arpo", "aepo_agentic"):
        cs = load_card(paper)["tiers"]["paper"]["model"]["cold_start"]
        assert cs["name"] == "arpo_sft_54k" and cs["data"]["hub"] == "dongguanting/ARPO-SFT-54K"
        assert cs["trl"]["learning_rate"] == 7.0e-6 and cs["trl"]["num_train_epochs"] == 3.0  # qwen.yaml
        assert cs["cutoff_len"] == 15000 and cs["template"] == "qwen"
    ts = load_card("tool_light")["tiers"]["paper"]["model"]["cold_start"]  # Tool-Light sft.yaml
    assert ts["data"] == {"hub": "dongguanting/Tool-Star-SFT-54K", "split": "train",
                          "file": "tool_star_sft/final_sft_edition9.json", "formatting": "alpaca"}
    assert ts["trl"]["gradient_accumulation_steps"] == 4 and ts["resources"]["processes"] == 4
    assert base_model_key(resolve_job("tool_light", "paper", "tool_light", 42)).startswith("sft-")
    keys = {base_model_key(resolve_job(p, "paper", m, 42)) for p, m in
            (("arpo", "arpo"), ("arpo", "grpo"), ("aepo_agentic", "aepo_agentic"))}
    assert len(keys) == 1 and next(iter(keys)).startswith("sft-")
    # without the block, the same hub model keeps its plain key (hf-)
    job = resolve_job("arpo", "paper", "arpo", 42)
    plain = {**job, "model": {k: v for k, v in job["model"].items() if k != "cold_start"}}
    assert base_model_key(plain).startswith("hf-")


def test_an_unknown_recipe_name_fails_listing_the_known(tmp_path, monkeypatch):
    import harness.config as HC

    card = HC.load_yaml(HC.REPO_ROOT / "replications" / "arpo" / "card.yaml")
    card["tiers"]["paper"]["model"]["cold_start"] = "arpo_sft_99k"
    real = HC.load_yaml
    monkeypatch.setattr(HC, "load_yaml", lambda p: card if str(p).endswith("arpo/card.yaml") else real(p))
    HC._load_card_cached.cache_clear()
    try:
        with pytest.raises(ConfigError, match="unknown cold start 'arpo_sft_99k'; valid: arpo_sft_54k"):
            HC.load_card("arpo")
    finally:
        monkeypatch.undo()
        HC._load_card_cached.cache_clear()


# --- one real run --------------------------------------------------------------------------------------------------

def _tiny_chat_model(path: Path) -> Path:
    """A tiny random model whose word-level tokenizer knows the qwen template's markers."""
    from conftest import tiny_word_model

    return tiny_word_model(path, ["<|im_start|>", "<|im_end|>", "<tool_response>", "</tool_response>", "system",
                                  "user", "assistant"], max_positions=512)


def test_the_stage_trains_on_the_responses_and_writes_a_loadable_model(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = _tiny_chat_model(tmp_path / "base")
    data = tmp_path / "data" / "sft"
    data.mkdir(parents=True)
    rows = [row(("human", f"What is {a}+{b}?"), ("gpt", f"<think>add</think> {a + b}"), system="Add.")
            for a in range(4) for b in range(4)] + [row(("gpt", "orphan"))]
    (data / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = {"kind": "hf", "name": str(base), "cold_start": {
        "data": {"file": "sft/rows.jsonl", "hub": "nobody/never-loaded"}, "cutoff_len": 64, "seed": 3,
        "trl": {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 2, "learning_rate": 1e-2,
                "num_train_epochs": 2.0, "lr_scheduler_type": "cosine", "warmup_steps": 0.1, "logging_steps": 1}}}
    out = tmp_path / "models" / "sft-x" / "base"
    rec = run_cold_start(spec, out, tmp_path / "data")
    cs = rec["cold_start"]
    assert cs["rows_read"] == 17 and cs["rows_trained"] == 16 and cs["skipped"] == {"invalid role tag": 1}
    assert cs["steps"] == 4  # 16 rows / (4 x 2) per update x 2 epochs
    assert cs["data"]["file"] == "sft/rows.jsonl" and len(cs["data"]["sha256"]) == 64
    assert rec["base"] == {"hub": str(base), "revision": None}
    assert cs["eos_token"] == "<|im_end|>" and AutoTokenizer.from_pretrained(out).eos_token == "<|im_end|>"
    losses = [e["loss"] for e in cs["log"] if "loss" in e]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert json.loads((out / "source.json").read_text()) == rec and not (out / "trainer").exists()
    # the fine-tuned weights moved; the model and its tokenizer load from the directory
    m0 = AutoModelForCausalLM.from_pretrained(base)
    m1 = AutoModelForCausalLM.from_pretrained(out)
    AutoTokenizer.from_pretrained(out)
    assert not torch.equal(m0.lm_head.weight, m1.lm_head.weight)
    # a second run with the same inputs gives the same weights (seeded sampler, CPU)
    rec2 = run_cold_start(spec, tmp_path / "again", tmp_path / "data")
    m2 = AutoModelForCausalLM.from_pretrained(tmp_path / "again")
    assert torch.equal(m1.lm_head.weight, m2.lm_head.weight) and rec2["cold_start"]["rows_digest"] == cs["rows_digest"]


def test_missing_rows_fail_with_the_file_and_the_hub_named(tmp_path, monkeypatch):
    import datasets

    def offline(*a, **k):  # no hub here (and no waiting on one): what load_dataset raises without a network
        raise ConnectionError("Couldn't reach 'nobody/absent' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(ConfigError, match=r"no file .*sft/none.json and cannot load 'nobody/absent' from the hub"):
        C.read_rows({"file": "sft/none.json", "hub": "nobody/absent"}, tmp_path, None)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"conversations": []}\n{"conversations": \n')
    with pytest.raises(ConfigError, match=r"bad.jsonl:2: not valid JSON"):
        C.read_rows({"file": "bad.jsonl"}, tmp_path, None)
    (tmp_path / "obj.json").write_text("{}")
    with pytest.raises(ConfigError, match="expected a JSON list of rows, got dict"):
        C.read_rows({"file": "obj.json"}, tmp_path, None)


def test_harness_settings_lists_the_cold_start_block():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "harness.face.cli", "settings"], capture_output=True, text=True,
                         check=True).stdout
    block = out[out.index("model.cold_start: ColdStartSpec"):]
    assert "cutoff_len = 15000 [tokens]" in block and "arpo_train_sft/yaml/qwen.yaml" in block
