"""The agent evaluation (:mod:`harness.evaluate.agent`, :mod:`harness.evaluate.agent_spec`) on the smoke household.

- Golden numbers from scripted policies (test_episodes.Scripted): the expert wins every game (success 1, no
  invalid turn, steps = the shortest plans); a policy that plays the expert on half the games and untagged text on
  the others gives success 0.5 overall, 1 or 0 per task type, 4 invalid turns per losing episode, and the reward.
- The record is an ``eval_result`` whose entry names the split, has all six task types, pass@j for j = 1, 2, 4 and
  mean-of-k = avg@k; its protocol hash is the hash of its protocol fields, moves with the template, the budgets
  and the split, and not with the model (two models, one protocol).
- Bad settings get clear errors (split not the environment's, unknown game id, greedy with k > 1, repeats).
- ``config/agents.yaml``: every entry loads, the ALFWorld entry's games are manifest ids covering the six task
  types; bad entries name the file and field. ``python -m harness.evaluate.agent`` runs a spec file end to end and
  writes a content-hashed result; ``snakemake -n agents`` plans the evaluation under the key of its spec.
"""
from __future__ import annotations

import functools
import json
import subprocess
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from harness.envs.base import TASK_TYPES  # noqa: E402
from harness.envs.household import HouseholdEnv, expert_plan  # noqa: E402
from harness.evaluate.agent import evaluate_agent  # noqa: E402
from harness.results.protocol import assert_same_protocol, protocol_hash  # noqa: E402
from test_episodes import Scripted, expert_turns  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GAMES = [f"household-valid-{i}" for i in range(6)]  # task types round-robin: one game of each
FACTORY = functools.partial(HouseholdEnv, "valid", 12)
SETTINGS = dict(split="valid", k=2, temperature=1.0, max_turns=12, max_new_tokens_per_turn=16, template="compact",
                max_episode_tokens=None, seed=0, invalid_penalty=0.1, bootstrap_iters=200)


@pytest.fixture(scope="module")
def tok():
    import string

    from harness.data.wordlevel import word_level_tokenizer
    from harness.envs.agent import COMPACT, VERL_AGENT
    from harness.envs.household import vocabulary

    words = sorted({w for w in vocabulary() if len(w) > 1} | set(COMPACT.words()) | set(VERL_AGENT.words()))
    chars = sorted(set(string.ascii_letters + string.digits + string.punctuation + " \n") - set(words))
    return word_level_tokenizer(["<pad>", "<bos>", "<eos>", "<unk>"] + words + chars, words)


def tiny_model(tok, seed=0):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, intermediate_size=64, max_position_embeddings=4096,
                      tie_word_embeddings=True, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id)
    return Qwen2ForCausalLM(cfg).eval()


def scripts(tok, turns_of):
    """{first prompt ids: turns} for every game in GAMES (the compact template, as Scripted expects)."""
    from harness.envs.agent import COMPACT

    env, out = FACTORY(), {}
    for gid in GAMES:
        step = env.reset(gid)
        out[tuple(tok(COMPACT.render(step, env.task, first=True))["input_ids"])] = turns_of(env.game(gid))
    return out


def entry_of(result):
    (name, entry), = result["benchmarks"].items()
    return name, entry


def test_scripted_expert_scores_one(tok):
    r = evaluate_agent(Scripted(tok, scripts(tok, expert_turns)), tok, FACTORY, GAMES, **SETTINGS)
    name, b = entry_of(r)
    assert r["kind"] == "eval_result" and name == "household_valid" and b["split"] == "valid"
    assert (b["n_games"], b["k"], b["n_episodes"]) == (6, 2, 12)
    assert b["success_rate"]["value"] == 1.0 and b["success_rate"]["ci"] == [1.0, 1.0]
    assert b["metrics"]["avg@k"]["value"] == b["metrics"]["pass@k"]["value"] == 1.0
    assert set(b["per_task_type"]) == set(TASK_TYPES)
    assert all(v["n_games"] == 1 and v["value"] == 1.0 for v in b["per_task_type"].values())
    plans = [len(expert_plan(FACTORY().game(g))) for g in GAMES]
    ep = b["episodes"]
    assert ep["steps"]["value"] == pytest.approx(sum(plans) / 6) and ep["turns"]["value"] == ep["steps"]["value"]
    assert ep["invalid_actions"]["value"] == ep["unknown_actions"]["value"] == ep["truncated"]["value"] == 0.0
    assert ep["reward"]["value"] == 10.0
    assert [g["id"] for g in b["per_problem"]] == GAMES and all(g["n_correct"] == 2 for g in b["per_problem"])
    assert r["protocol_hash"] == protocol_hash(r["protocol"])
    assert b["protocol_hash"] == protocol_hash(r["protocol"]["benchmarks"][name])
    assert r["protocol"]["benchmarks"][name]["extra"]["env"]["split"] == "valid"


def test_half_the_games_golden(tok):
    """Games 0, 2, 4 (pick_and_place, look_at_obj_in_light, pick_cool_then_place_in_recep): the expert; games 1, 3,
    5: an action without tags at every turn, until max_turns (12)."""
    def turns(game):
        return expert_turns(game) if int(game.game_id.rsplit("-", 1)[1]) % 2 == 0 else ["go to bed 1"] * 12

    r = evaluate_agent(Scripted(tok, scripts(tok, turns)), tok, FACTORY, GAMES, **SETTINGS)
    _, b = entry_of(r)
    won = [g["n_correct"] for g in b["per_problem"]]
    assert won == [2, 0, 2, 0, 2, 0]
    rate = 0.5
    assert b["success_rate"]["value"] == pytest.approx(rate) and b["metrics"]["avg@k"]["value"] == pytest.approx(rate)
    assert b["metrics"]["pass@k"]["value"] == pytest.approx(sum(w > 0 for w in won) / 6)
    assert set(b["pass_at"]) == {"1", "2"} and b["pass_at"]["1"] == pytest.approx(rate)
    for i, t in enumerate(TASK_TYPES):
        assert b["per_task_type"][t]["value"] == won[i] / 2
    losers = [g for i, g in enumerate(b["per_problem"]) if i % 2]
    assert all(e["invalid_actions"] == e["turns"] == 12 and e["truncated"] and e["reward"] == pytest.approx(-1.2)
               and e["actions"] == [None] * 12 for g in losers for e in g["episodes"])
    assert b["episodes"]["invalid_actions"]["value"] == pytest.approx(12 * 6 / 12)
    assert b["episodes"]["truncated"]["value"] == 0.5
    assert b["episodes"]["reward"]["value"] == pytest.approx((10 * 6 - 1.2 * 6) / 12)
    lo, hi = b["success_rate"]["ci"]
    assert lo <= rate <= hi and hi - lo > 0


def test_protocol_moves_with_settings_not_with_the_model(tok):
    kw = {**SETTINGS, "k": 1, "max_turns": 2, "max_new_tokens_per_turn": 6}
    a = evaluate_agent(tiny_model(tok, 0), tok, FACTORY, GAMES[:2], **kw)
    b = evaluate_agent(tiny_model(tok, 1), tok, FACTORY, GAMES[:2], **kw)
    assert assert_same_protocol([a, b]) == a["protocol_hash"]
    for change in ({"template": "verl_agent"}, {"max_turns": 3}, {"max_episode_tokens": 900}, {"seed": 1},
                   {"temperature": 0.5}):
        c = evaluate_agent(tiny_model(tok, 0), tok, FACTORY, GAMES[:2], **{**kw, **change})
        assert c["protocol_hash"] != a["protocol_hash"], change
    other = evaluate_agent(tiny_model(tok, 0), tok, functools.partial(HouseholdEnv, "train", 12),
                           ["household-train-0", "household-train-1"], **{**kw, "split": "train"})
    assert other["protocol_hash"] != a["protocol_hash"] and "household_train" in other["benchmarks"]


def test_bad_settings_are_refused(tok):
    model = tiny_model(tok)
    with pytest.raises(ValueError, match="split 'valid_seen' is not the environment's: it serves 'valid'"):
        evaluate_agent(model, tok, FACTORY, GAMES, **{**SETTINGS, "split": "valid_seen"})
    with pytest.raises(KeyError, match="household-valid-99"):
        evaluate_agent(model, tok, FACTORY, ["household-valid-99"], **SETTINGS)
    with pytest.raises(ValueError, match="0 \\(greedy\\) only with k = 1"):
        evaluate_agent(model, tok, FACTORY, GAMES, **{**SETTINGS, "temperature": 0.0})
    with pytest.raises(ValueError, match="without repeats"):
        evaluate_agent(model, tok, FACTORY, GAMES[:1] * 2, **SETTINGS)
    with pytest.raises(ValueError, match="unknown template 'nope'; valid: verl_agent"):
        evaluate_agent(model, tok, FACTORY, GAMES, **{**SETTINGS, "template": "nope"})


# -- config/agents.yaml, the spec runner, the DAG ----------------------------------------------------------------
def test_agents_config_loads_and_bad_entries_are_named(tmp_path):
    import yaml

    from harness.config import ConfigError
    from harness.envs.alfworld import load_manifest, manifest_path
    from harness.evaluate.agent_spec import CONFIG, agent_spec, load_config

    evals = load_config()
    alf = evals["alfworld_smollm2"]
    types = {g["id"]: g["task_type"] for g in load_manifest(manifest_path("valid_unseen"))["games"]}
    assert len(alf["games"]) == 10 and set(alf["games"]) <= set(types)
    assert {types[g] for g in alf["games"]} == set(TASK_TYPES)
    spec = agent_spec(alf)
    assert spec["data"]["env"] == {"name": "alfworld", "split": "valid_unseen", "max_steps": 50}
    assert "workers" not in json.dumps(spec)
    data = yaml.safe_load(CONFIG.read_text())
    for path, value, message in ((("eval", "template"), "nope", "evaluations/alfworld_smollm2/eval/template: 'nope'"),
                                 (("eval", "k"), "2", "eval/k: '2' is not int"),
                                 (("tier",), "huge", "tier: 'huge'; valid:"),
                                 (("workers",), -1, "workers: an integer >= 0")):
        bad = json.loads(json.dumps(data))
        node = bad["evaluations"]["alfworld_smollm2"]
        for p in path[:-1]:
            node = node[p]
        node[path[-1]] = value
        f = tmp_path / "agents.yaml"
        f.write_text(yaml.safe_dump(bad))
        with pytest.raises(ConfigError, match=message) as info:
            load_config(f)
        assert str(info.value).startswith(f"{f}: evaluations/alfworld_smollm2")


def test_spec_file_runs_end_to_end(tok, tmp_path, capsys):
    from harness.evaluate.agent import main
    from harness.results import content_hash

    tiny_model(tok).save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    spec = {"tier": "smoke", "model": {"kind": "hf", "name": "tiny"}, "pretrain": None,
            "data": {"env": {"name": "household", "split": "valid", "n_games": 6}, "games": GAMES[:2]},
            "eval": {"k": 2, "temperature": 1.0, "max_turns": 2, "max_new_tokens_per_turn": 6, "template": "compact",
                     "max_episode_tokens": None, "seed": 0, "invalid_penalty": 0.1}}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    out = tmp_path / "agent.json"
    assert main(["--spec", str(tmp_path / "spec.json"), "--model-dir", str(tmp_path / "model"), "--out", str(out),
                 "--workers", "2"]) == 0
    r = json.loads(out.read_text())
    assert r["content_hash"] == content_hash(r) and r["spec"] == spec
    assert r["source"] == {"method": "base", "tier": "smoke"} and r["settings"]["workers"] == 2
    _, b = entry_of(r)
    assert b["n_episodes"] == 4 and b["timing"]["generate_calls"] == 2
    assert main(["--spec", str(tmp_path / "missing.json"), "--model-dir", str(tmp_path / "model"),
                 "--out", str(out)]) == 2
    (tmp_path / "bad.json").write_text(json.dumps({**spec, "eval": {**spec["eval"], "history_length": 2}}))
    assert main(["--spec", str(tmp_path / "bad.json"), "--model-dir", str(tmp_path / "model"), "--out", str(out)]) == 2
    assert f"{tmp_path / 'bad.json'}/eval: needs exactly k, temperature" in capsys.readouterr().err


def test_snakemake_plans_the_agent_evaluation(tmp_path):
    from harness.evaluate.agent_spec import agent_spec, load_config
    from harness.plan import base_eval_key

    key = base_eval_key(agent_spec(load_config()["alfworld_smollm2"]))
    p = subprocess.run(["snakemake", "-n", "--nolock", "--cores", "2", "agents", "--config",
                        f"work_dir={tmp_path / 'work'}"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert f"base-evals/cpu-real/{key}/agent.json" in p.stdout
    assert "--workers 2" in p.stdout and "rule agent_eval" in p.stdout and "prepare_hf_model" in p.stdout
