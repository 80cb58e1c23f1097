"""One home per setting: every tier block of a card is a dataclass in harness/config/tiers.py; the card schema, the
commands' help and every reader take their defaults from it."""
from __future__ import annotations

import ast
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.config import ConfigError, _schema
from harness.config.tiers import BLOCKS, BenchmarkSpec, EvalSpec, SettingError, json_schema, parse

ROOT = Path(__file__).resolve().parents[1]


def test_card_schema_file_states_no_tier_block_settings():
    raw = json.loads((ROOT / "config" / "card.schema.json").read_text())["$defs"]["tier"]["properties"]
    for block in BLOCKS:
        assert set(raw[block]) == {"description"}, f"config/card.schema.json restates {block}: generate it instead"


def test_schema_in_use_is_generated_from_the_dataclasses():
    props = _schema("card.schema.json")["$defs"]["tier"]["properties"]
    for block, cls in BLOCKS.items():
        got = props[block]["additionalProperties"] if block == "benchmarks" else props[block]
        assert got == json_schema(cls)
        assert set(got["properties"]) == {f.name for f in dataclasses.fields(cls)}


def test_bad_card_values_are_one_line_errors_naming_field_type_and_value(tmp_path, monkeypatch):
    with pytest.raises(SettingError, match=r"card tiers/smoke/eval: max_new_tokens must be int, got 'four'"):
        parse(EvalSpec, {"max_new_tokens": "four"}, "card tiers/smoke/eval")
    with pytest.raises(SettingError, match=r"unknown setting 'max_gen_tokens' \(did you mean 'max_gen_toks'\?\)"):
        parse(BenchmarkSpec, {"max_gen_tokens": 10}, "b")
    with pytest.raises(SettingError, match="chat_template must be bool"):
        parse(BenchmarkSpec, {"chat_template": 1}, "b")
    assert parse(EvalSpec, {"temperature": 1}, "x").temperature == 1  # an int is a valid float
    # and through card loading (the schema generated from the dataclasses)
    import harness.config as config

    card = ROOT / "replications" / "entropy_mechanism" / "card.yaml"
    bad = tmp_path / "replications" / "entropy_mechanism" / "card.yaml"
    bad.parent.mkdir(parents=True)
    bad.write_text(card.read_text().replace("max_new_tokens: 4}", "max_new_tokens: four}", 1))
    (tmp_path / "config").symlink_to(ROOT / "config")
    monkeypatch.setattr(config, "REPO_ROOT", tmp_path)
    config._load_card_cached.cache_clear()
    try:
        with pytest.raises(ConfigError, match="max_new_tokens: 'four' is not of type 'integer'"):
            config.load_card("entropy_mechanism")
    finally:
        config._load_card_cached.cache_clear()


def test_help_texts_quote_the_dataclass_defaults():
    out = subprocess.run([sys.executable, "-m", "harness.face.cli", "eval-heldout", "--help"], capture_output=True,
                         text=True, cwd=ROOT).stdout
    assert f"eval.final_k, default {EvalSpec().final_k}" in " ".join(out.split())
    out = subprocess.run([sys.executable, "-m", "harness.face.cli", "eval", "--help"], capture_output=True,
                         text=True, cwd=ROOT).stdout
    assert f"default {BenchmarkSpec().max_gen_toks}" in " ".join(out.split())


#: setting names whose defaults live in the dataclasses: a reader that writes ``d.get("<name>", <default>)`` states a
#: second default
SETTING_NAMES = {f.name for cls in (EvalSpec, BenchmarkSpec) for f in dataclasses.fields(cls)
                 if f.name not in ("limit", "k", "temperature", "n_val", "top_p")} | {"final_k", "every_steps", "max_gen_toks"}


def test_no_reader_restates_a_default():
    found = []
    for path in sorted((ROOT / "harness").rglob("*.py")) + sorted((ROOT / "rules").glob("*.smk")):
        if path.suffix == ".smk":
            continue  # Snakemake syntax is not Python; rules/common.smk goes through BenchmarkSpec (read below)
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                    and len(node.args) == 2 and isinstance(node.args[0], ast.Constant)
                    and node.args[0].value in SETTING_NAMES):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} .get({node.args[0].value!r}, ...)")
    assert not found, "defaults stated outside harness/config/tiers.py: " + "; ".join(found)
    smk = (ROOT / "rules" / "common.smk").read_text()
    assert "max_gen_toks', 1024" not in smk and "parse_setting(BenchmarkSpec" in smk
