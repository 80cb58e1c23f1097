"""The smoke agent task ``household`` (harness/data/household.py) and the ``smoke-agent`` tier: tokenizer, splits,
scripted pre-training episodes, the overlaid tier, the trainer's refusal of single-turn rollout hooks, and a tiny
end-to-end job (pre-train, one GRPO step of episodes, the held-out episode evaluation)."""
from __future__ import annotations

import random

import pytest

from harness.config.tiers import DataSpec, PretrainSpec
from harness.data import household as H
from harness.envs.agent import OBSERVATION, parse_action
from harness.envs.base import TASK_TYPES


@pytest.fixture(scope="module")
def tok():
    return H.build_tokenizer()


def _episodes(n: int, noise: float, seed: int = 0):
    train, _ = H.splits(DataSpec(task="household", n_train=300, n_val=60))
    env, rng = H.env_for("train", [r["prompt"] for r in train]), random.Random(seed)
    return [H.expert_episode(env, train[rng.randrange(len(train))]["prompt"], rng, noise) for _ in range(n)]


def test_tokenizer_is_closed_and_word_level(tok):
    for prompt, pieces, _ in _episodes(60, 0.3):
        text = prompt + "".join(t for t, _ in pieces)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids
        assert tok.decode(ids) == text  # lossless
    turn = tok.convert_ids_to_tokens(tok("<action> take apple 1 from countertop 1 </action>",
                                         add_special_tokens=False)["input_ids"])
    assert turn == ["<action>", " take", " apple", " 1", " from", " countertop", " 1", " </action>"]
    assert len(tok) == len(H.smoke_task().vocab)


def test_splits_hold_out_valid_games_by_content():
    train, val = H.splits(DataSpec(task="household", n_train=2000, n_val=60))
    assert len(train) == 2000 and len(val) == 60
    assert all(r["prompt"].startswith("household-train-") for r in train)
    assert [r["prompt"] for r in val] == [f"household-valid-{i}" for i in range(60)]
    tenv, venv = H.env_for("train", [r["prompt"] for r in train]), H._env("valid", 60)
    held = {H._content(venv.game(r["prompt"])) for r in val}
    assert not held & {H._content(tenv.game(r["prompt"])) for r in train}
    assert len(train) == len({r["prompt"] for r in train})
    with pytest.raises(Exception, match="n_train is required"):
        H.splits(DataSpec(task="household"))


def test_expert_episodes_win_and_fit_the_context(tok):
    clean = _episodes(60, 0.0)
    assert all(won for _, _, won in clean)  # the expert's shortest plans always fit the turn budget
    noisy = _episodes(200, 0.3, seed=1)
    assert 0.5 < sum(won for *_, won in noisy) / len(noisy) < 1.0  # detours cost steps; some run out of turns
    for prompt, pieces, won in clean + noisy:
        n = len(tok(prompt + "".join(t for t, _ in pieces), add_special_tokens=False)["input_ids"])
        assert n + 1 <= H.MAX_EPISODE_TOKENS  # + EOS
        model = [t for t, env in pieces if not env]
        assert 1 <= len(model) <= H.MAX_TURNS and all(parse_action(t) for t in model)
        assert [env for _, env in pieces] == [i % 2 == 1 for i in range(len(pieces))]  # turn, reply, turn, ...
        assert all(t.startswith("\n") and t.endswith("\n") for t, env in pieces if env)
        assert prompt.endswith("\n") and "Your task is to:" in prompt
        assert all(len(tok(t, add_special_tokens=False)["input_ids"]) <= H.MAX_NEW_TOKENS_PER_TURN for t in model)


def test_pretrain_batch_is_seeded():
    train, _ = H.splits(DataSpec(task="household", n_train=100, n_val=12))
    pre = PretrainSpec(seed=0, steps=1, batch_size=4, lr=1e-3, noise=0.2)
    a = H.pretrain_batch(random.Random(3), train, pre, 4)
    b = H.pretrain_batch(random.Random(3), train, pre, 4)
    assert a == b and len(a) == 4
    assert OBSERVATION.first == "{observation}\n"


def test_smoke_agent_tier_is_the_overlay_plus_the_card(tmp_path):
    from harness.config.derived import derive_tiers

    import yaml

    root = tmp_path
    (root / "config" / "tiers").mkdir(parents=True)
    (root / "config" / "tiers" / "smoke-agent.yaml").write_text(
        "seeds: [1]\nmodel: {kind: smoke}\ndata: {task: household, n_train: 10}\ntrl: {max_steps: 5, beta: 0.0}\n")
    out = derive_tiers({"smoke-agent": {"trl": {"max_steps": 9}, "methods": {"x": {"a": 1}}}}, root,
                       lambda p: yaml.safe_load(p.read_text()))
    assert out["smoke-agent"]["trl"] == {"max_steps": 9, "beta": 0.0}
    assert out["smoke-agent"]["data"]["task"] == "household" and out["smoke-agent"]["methods"] == {"x": {"a": 1}}
    assert "smoke-reasoning" not in out


def test_scorer_refuses_single_completions():
    with pytest.raises(TypeError, match="playing episodes"):
        H.smoke_task().score("<action> look </action>", "")


def test_tiny_job_end_to_end(tmp_path):
    """Pre-train a tiny model for a few steps, one GRPO step of episodes (env tokens masked, the episode metrics
    logged, the held-out curve from EpisodeEval), then the final held-out evaluation with per-task-type success."""
    import yaml

    from harness.config import REPO_ROOT
    from harness.evaluate.heldout import evaluate_heldout_job
    from harness.train.job import run_job
    from harness.train.pretrain import pretrain

    t = yaml.safe_load((REPO_ROOT / "config" / "tiers" / "smoke-agent.yaml").read_text())
    model = {**t["model"], "hidden_size": 32, "intermediate_size": 64, "num_layers": 1, "num_heads": 2}
    pre = {**t["pretrain"], "steps": 3, "batch_size": 2}
    data = {**t["data"], "n_train": 50, "n_val": 6}
    pretrain(tmp_path / "base", model, pre, data, log=lambda *_: None)
    job = {"tier": "smoke-agent", "method": "grpo", "seed": 1, "hparams": {}, "model": model, "data": data,
           "pretrain": pre, "eval": {**t["eval"], "n_val": 6, "every_steps": 1}, "job_key": "test",
           "trl": {**t["trl"], "max_steps": 1, "per_device_train_batch_size": 8, "num_generations": 4,
                   "steps_per_generation": 1}}
    r = run_job(job, model_dir=tmp_path / "base", out_dir=tmp_path / "job", data_dir=tmp_path, mlflow_uri=None,
                save_model=True)
    m = r["metrics"][0]
    assert "episodes/success_rate" in m and 0 < m["episodes/turns"] <= H.MAX_TURNS
    assert m["completions/mean_length"] == pytest.approx(m["episodes/model_tokens"])  # env tokens not counted
    assert [e["step"] for e in r["heldout"]] == [0, 1]
    assert {"greedy_acc", "sampled_acc", "entropy", "mean_length", "success/pick_and_place"} <= set(r["heldout"][0])
    ev = evaluate_heldout_job(job, tmp_path / "job" / "model", data_dir=tmp_path, out=tmp_path / "eval.json", k=2,
                              bootstrap_iters=50)
    e = ev["benchmarks"]["household_heldout"]
    assert e["split"] == "valid" and e["n_games"] == 6 and e["k"] == 2
    assert set(e["per_task_type"]) == set(TASK_TYPES) and "avg@k" in e["metrics"]
    assert ev["benchmarks"]["household_heldout_greedy"]["metrics"]["greedy_acc"]["value"] in (0.0, 1 / 6, 2 / 6,
                                                                                             3 / 6, 4 / 6, 5 / 6, 1.0)
    from harness.evaluate.task_report import run_task_report

    rep = run_task_report(job, tmp_path / "base", tmp_path / "report", k=1)  # the episode report, as the DAG calls it
    assert (tmp_path / "report" / "task_report.png").exists() and rep["settings"]["split"] == "valid"
    # a verdict lists it like a text task's report (the agent cards' verdicts failed on it before: no kind)
    from harness.claims.verdict import task_report_summary

    summary = task_report_summary(tmp_path / "report" / "task_report.json")
    assert summary["task"] == "household" and set(summary["checks"]) == set(rep["checks"])
    assert all(set(c) == {"value", "low", "high", "ok"} for c in rep["checks"].values())  # what the CLI prints


def test_trainer_refuses_single_turn_rollout_hooks_with_episodes(tmp_path):
    from harness.methods.registry import get_method
    from harness.train.trainer import HarnessGRPOTrainer

    rollout_methods = [n for n in ("cure", "ettrl", "ares", "t1") if get_method(n).hook("rollout") is not None]
    assert rollout_methods
    with pytest.raises(ValueError, match="multi-turn episode rollout"):
        HarnessGRPOTrainer(model=None, reward_funcs=[lambda **k: []], args=None,
                           method=get_method(rollout_methods[0]), rollout_func=lambda prompts, trainer: {})


def test_a_cards_heldout_names_a_games_heldout_entries():
    """The agent cards' final-success claims name `heldout`; a game's evaluation names its entries
    `<task>_heldout` and `<task>_heldout_greedy` (their verdicts read 'eval jobs missing' before)."""
    from harness.claims.stats import entry_name, score_matrix

    from harness.results.protocol import protocol_hash

    def ev(seed, wins):
        proto = {"household_heldout": {"x": 1}, "household_heldout_greedy": {"x": 2}}
        per = [{"id": f"g{i}", "n_correct": w} for i, w in enumerate(wins)]
        return {"source": {"method": "m", "seed": seed}, "protocol": {"benchmarks": proto},
                "benchmarks": {n: {"k": k, "protocol_hash": protocol_hash(proto[n]), "per_problem": per}
                               for n, k in (("household_heldout", 2), ("household_heldout_greedy", 1))}}

    evals = [ev(1, [2, 0]), ev(2, [1, 1])]
    assert entry_name(evals[0], "heldout") == "household_heldout"
    assert entry_name(evals[0], "heldout_greedy") == "household_heldout_greedy"
    assert entry_name(evals[0], "math500") is None and entry_name({"benchmarks": {"heldout": {}}}, "heldout") == "heldout"
    m = score_matrix(evals, "m", "heldout")
    assert m["seeds"] == [1, 2] and m["matrix"].tolist() == [[1.0, 0.0], [0.5, 0.5]]
    assert score_matrix(evals, "m", "heldout_greedy")["matrix"].tolist() == [[2.0, 0.0], [1.0, 1.0]]
