"""Training monitors (harness/train/monitors.py, issue 15): hand-computed top-k entropy/mass and conditional answer
entropy, the step protocol of the reasoning task, the LM-head reconstruction against TRL's own entropies, that a
run with monitors trains bit-identically to one without, the settings, and the two analysis cards' claims on
synthetic result files."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from harness.config import ConfigError, load_card
from harness.data import reasoning as R
from harness.train import monitor_stats as S
from harness.train import monitors as M

from conftest import tiny_grpo_trainer

TINY_REASONING = {"model": {"kind": "smoke", "hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64},
                  "pretrain": {"seed": 0, "steps": 60, "batch_size": 32, "lr": 3e-3, "noise": 0.1, "check_rate": 0.3},
                  "data": {"task": "reasoning", "n_val": 64, "split_seed": 1234, "n_train": 256}}


@pytest.fixture(scope="module")
def reasoning_base(tmp_path_factory):
    from harness.train.pretrain import pretrain

    out = tmp_path_factory.mktemp("monitors") / "base"
    pretrain(out, TINY_REASONING["model"], TINY_REASONING["pretrain"], TINY_REASONING["data"], log=lambda *a: None)
    return out


@pytest.fixture(scope="module")
def tok():
    return R.build_tokenizer()


# ----------------------------------------------------------------------------------------------- top-k, golden --
def test_topk_entropy_and_mass_hand_computed():
    logits = torch.log(torch.tensor([[0.4, 0.3, 0.2, 0.1], [0.25, 0.25, 0.25, 0.25]]))
    hk, mass, full = S.topk_stats(logits, 2)
    # row 0: top-2 = 0.4, 0.3 -> mass 0.7, renormalised (4/7, 3/7); row 1: mass 0.5, renormalised (1/2, 1/2)
    assert mass.tolist() == pytest.approx([0.7, 0.5], abs=1e-6)
    assert hk.tolist() == pytest.approx([-(4 / 7) * math.log(4 / 7) - (3 / 7) * math.log(3 / 7), math.log(2)], abs=1e-6)
    assert full.tolist() == pytest.approx([-sum(p * math.log(p) for p in (0.4, 0.3, 0.2, 0.1)), math.log(4)], abs=1e-6)
    hk, mass, _ = S.topk_stats(logits, 4)  # k = V: the whole distribution
    assert mass.tolist() == pytest.approx([1.0, 1.0], abs=1e-6)


class _Head(torch.nn.Module):
    """A stand-in with an identity LM head (logits = hidden states) and TRL's config fields."""

    def __init__(self, v: int, **cfg):
        super().__init__()
        self.head = torch.nn.Linear(v, v, bias=False)
        with torch.no_grad():
            self.head.weight.copy_(torch.eye(v))
        self.config = SimpleNamespace(model_type="llama", get_text_config=lambda: self.config, **cfg)

    def get_output_embeddings(self):
        return self.head


def test_topk_from_hidden_masks_positions_and_applies_temperature_and_softcap():
    hidden = torch.zeros(1, 3, 4)
    hidden[0, 0] = torch.log(torch.tensor([0.4, 0.3, 0.2, 0.1]))
    hidden[0, 1] = torch.tensor([2.0, 0.0, 0.0, 0.0])
    hidden[0, 2] = torch.tensor([100.0, -100.0, 3.0, 7.0])  # masked out: must not count
    mask = torch.tensor([[1, 1, 0]])
    hk, mass, _ = S.topk_from_hidden(_Head(4), hidden, mask, 2, temperature=2.0)
    # T = 2: logits / 2. Row 1: p ~ (e, 1, 1, 1) -> top-2 mass (e + 1) / (e + 3)
    p0 = torch.tensor([0.4, 0.3, 0.2, 0.1]).sqrt()
    p0 = p0 / p0.sum()
    q0 = p0[:2] / p0[:2].sum()
    e = math.e
    q1 = torch.tensor([e, 1.0]) / (e + 1)
    assert mass.tolist() == pytest.approx([float(p0[:2].sum()), (e + 1) / (e + 3)], abs=1e-6)
    assert hk.tolist() == pytest.approx([float(-(q0 * q0.log()).sum()), float(-(q1 * q1.log()).sum())], abs=1e-6)
    # soft-capping (TRL: cap * tanh(z / cap)) and a logit scale, before the temperature
    _, mass, _ = S.topk_from_hidden(_Head(4, final_logit_softcapping=1.0, logit_scale=2.0), hidden, mask, 1, 1.0)
    z = torch.tanh(2.0 * hidden[0, 1])
    assert float(mass[1]) == pytest.approx(float(torch.softmax(z, -1)[0]), abs=1e-6)


# ------------------------------------------------------------------------------------ steps of a reasoning chain --
def _ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_steps_of_the_reasoning_task(tok):
    p = S.reasoning_protocol(tok)
    chain = _ids(tok, " then 7+5=12 then 12+9=21 check 12+9=21 then 21+4=25 so \\boxed{25}") + [tok.eos_token_id]
    r, ends = S.steps_of(chain, p)
    assert tok.decode(r) == " then 7+5=12 then 12+9=21 check 12+9=21 then 21+4=25"  # connector and answer dropped
    assert ends == [0, 7, 15, 23, 31]  # n = 4 steps: then (7 tokens), then, check, then (8 each)
    assert [tok.decode(r[a:b]) for a, b in zip(ends, ends[1:])] == [
        " then 7+5=12", " then 12+9=21", " check 12+9=21", " then 21+4=25"]
    # truncated (no box): scored on what it wrote, the partial step included
    r, ends = S.steps_of(_ids(tok, " then 7+5=12 then 12+"), p)
    assert ends == [0, 7, 11]
    # tokens before the first planning word are step 1; an answer with no reasoning has no step
    assert S.steps_of(_ids(tok, "7+5=12 then 12+9=21 so \\boxed{21}"), p)[1] == [0, 6, 14]
    assert S.steps_of(_ids(tok, " so \\boxed{9}") + [tok.eos_token_id], p) == ([], [0])


class _CountLM(torch.nn.Module):
    """A causal LM with known conditionals: a position that sees c planning words (itself included) predicts the next
    token uniformly over the first max(1, 4 - c) of the digits 2, 5, 7, 9 (every other token: logit -30). It reads a
    2-D padding mask (causal) or a 4-D (B, 1, L, L) mask of what each position sees."""

    def __init__(self, tok):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.v = len(tok)
        self.fav = [tok.convert_tokens_to_ids(d) for d in "2579"]
        self.starts = [tok.convert_tokens_to_ids(w) for w in R.PLANNING_WORDS if w != " so "]

    def forward(self, input_ids, attention_mask, position_ids, logits_to_keep, use_cache=False):
        is_start = sum((input_ids == s).float() for s in self.starts)            # (B, L)
        if attention_mask.dim() == 2:
            n = input_ids.size(1)
            attention_mask = torch.tril(torch.ones(n, n, dtype=torch.bool)) & attention_mask.bool()[:, None, None, :]
        count = (attention_mask[:, 0].float() @ is_start.unsqueeze(-1)).squeeze(-1)  # (B, L)
        logits = torch.full((*input_ids.shape, self.v), -30.0)
        for j, t in enumerate(self.fav):
            logits[..., t] = 0.0 if j == 0 else torch.where(4 - count > j, 0.0, -30.0)
        return SimpleNamespace(logits=logits[:, -logits_to_keep:])


def test_conditional_answer_entropy_hand_computed(tok):
    p = S.reasoning_protocol(tok)
    prompt = _ids(tok, "7+5+9+4=")
    chain = _ids(tok, " then 7+5=12 then 12+9=21 check 12+9=21 so \\boxed{25}")
    r, ends = S.steps_of(chain, p)
    gold = p.encode("25")
    # Z_<=k holds k planning words: uniform over 4 - k digits -> H_k = log(4 - k) at both gold positions
    want_h = [math.log(4), math.log(3), math.log(2), 0.0]
    # NLL of "2" (first favourite) is log(m); of "5" (second) log(m) while m >= 2, else ~30 (logit -30)
    want_nll = [math.log(4), math.log(3), math.log(2), (0 + 30) / 2]
    seqs = [prompt + r[:e] + list(p.connector) + gold for e in ends]
    ent, nll = S.answer_scores(_CountLM(tok), seqs, [2] * len(seqs), temperature=1.0, pad_id=tok.pad_token_id,
                               batch_size=3)
    assert ent.tolist() == pytest.approx(want_h, abs=1e-6) and nll.tolist() == pytest.approx(want_nll, abs=1e-4)
    # all prefixes in one packed row (4-D mask), next to a shorter chain in the same batch
    other = (_ids(tok, "3+3="), _ids(tok, " then 3+3=6"), [0, 6], [*p.connector, *p.encode("6")], 1)
    (h, n), (h2, _) = S.chain_scores(_CountLM(tok), [(prompt, r, ends, [*p.connector, *gold], 2), other],
                                     temperature=1.0, pad_id=tok.pad_token_id)
    assert h == pytest.approx(want_h, abs=1e-6) and n == pytest.approx(want_nll, abs=1e-4)
    assert h2 == pytest.approx([math.log(4), math.log(3)], abs=1e-6)
    assert S.ols_slope(want_h) == pytest.approx(
        sum((k - 1.5) * (h - sum(want_h) / 4) for k, h in enumerate(want_h)) / 5.0)


def test_packed_rows_equal_plain_forwards_on_a_transformer(reasoning_base, tok):
    """The packed row of a chain (one forward, 4-D mask, shifted positions) gives the plain teacher-forced forward of
    every prefix, on the tiny Llama, in a batch with another chain."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(reasoning_base).eval()
    p = S.reasoning_protocol(tok)
    chains = []
    for prompt, text, ans in (("7+5+9+4=", " then 7+5=12 then 12+9=21 check 12+9=21 then 21+4=25 so \\boxed{25}", "25"),
                              ("3+3+3=", " then 3+3=6 then 6+3=9 so \\boxed{9}", "9")):
        r, ends = S.steps_of(_ids(tok, text), p)
        chains.append((_ids(tok, prompt), r, ends, [*p.connector, *p.encode(ans)], len(ans)))
    packed = S.chain_scores(model, chains, temperature=0.7, pad_id=tok.pad_token_id)
    for (pr, r, ends, sfx, g), (h, nll) in zip(chains, packed):
        ent, ref = S.answer_scores(model, [pr + r[:e] + sfx for e in ends], [g] * len(ends), temperature=0.7,
                                   pad_id=tok.pad_token_id)
        assert h == pytest.approx(ent.tolist(), abs=1e-5) and nll == pytest.approx(ref.tolist(), abs=1e-4)


def test_answer_scores_do_not_depend_on_the_batch(reasoning_base, tok):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(reasoning_base).eval()
    a = _ids(tok, "7+5+9+4= then 7+5=12 so \\boxed{25")
    b = _ids(tok, "3+3+3= then 3+3=6 then 6+3=9 check 6+3=9 so \\boxed{9")
    alone = S.answer_scores(model, [a], [2], temperature=1.0, pad_id=tok.pad_token_id)
    batch = S.answer_scores(model, [b, a], [1, 2], temperature=1.0, pad_id=tok.pad_token_id)
    assert float(batch[0][1]) == pytest.approx(float(alone[0][0]), abs=1e-5)
    assert float(batch[1][1]) == pytest.approx(float(alone[1][0]), abs=1e-5)


def test_utility_metrics_hand_computed():
    recs = [{"H": [1.0, 0.5, 0.0], "nll": [3.0, 2.0, 1.0], "correct": True, "level": 3},
            {"H": [0.2, 0.4], "nll": [1.0, 2.0], "correct": False, "level": 3},
            {"H": [0.7], "nll": [0.1], "correct": False, "level": 4}]  # no step: no slope
    m = S.utility_metrics(recs)
    assert m["scored"] == 3 and m["correct_frac"] == pytest.approx(1 / 3)
    assert m["slope_correct"] == pytest.approx(-0.5) and m["slope_incorrect"] == pytest.approx(0.2)
    assert m["falling_frac_correct"] == 1.0 and m["falling_frac_incorrect"] == 0.0 and m["falling_frac_gap"] == 1.0
    assert m["steps_correct"] == 2 and m["steps_incorrect"] == pytest.approx(0.5) and m["steps_gap"] == -1.5
    assert m["steps_gap_within_level"] == pytest.approx(-1.0)  # level 3 only: 1 - 2; level 4 has no correct chain
    assert m["h_start"] == pytest.approx(0.6333333) and m["reduction"] == pytest.approx((1.0 - 0.2 + 0.0) / 3)
    assert m["nll_end"] == pytest.approx((1.0 + 2.0 + 0.1) / 3)
    assert S.utility_metrics([]) == {"scored": 0.0}


# ------------------------------------------------------------------------------------------------- settings --
def test_settings_errors_and_job_blocks(tok):
    with pytest.raises(ConfigError, match="did you mean 'top_k'"):
        M.parse_monitors({"topk": 3})
    with pytest.raises(ConfigError, match="every_steps must be >= 0"):
        M.parse_monitors({"every_steps": -1})
    with pytest.raises(ConfigError, match="utility_samples must be >= 1 or null"):
        M.parse_monitors({"utility_samples": 0})
    job = {"model": {"kind": "smoke"}, "data": {"task": "reasoning"}}
    assert M.monitors_for_job(job, tok) is None  # no block: a job resolved before monitors trains as before
    assert M.monitors_for_job({**job, "monitors": {"every_steps": 0}}, tok) is None
    on = M.monitors_for_job({**job, "monitors": {}}, tok)
    assert on.spec == M.MonitorSpec() and on.protocol is not None
    add = M.monitors_for_job({**job, "data": {"task": "addition"}, "monitors": {"utility": True}}, tok)
    assert add.protocol is None  # no steps on the addition task: top-k only


# ---------------------------------------------------------------------------------------------- in the trainer --
def _dense_reward(completions, **kwargs):
    """A reward that varies within every group (the tiny model never answers right: the task's reward alone is 0
    everywhere, so the advantages, the loss and the update would be 0 and a bit-identity test vacuous)."""
    return [(len(c) % 7) / 7 for c in completions]


def _trainer(base, tmp_path, method_name, monitors=True, *, steps=2, spec=None, task_name="reasoning"):
    from harness.config.tiers import DataSpec
    from harness.data.smoke_tasks import smoke_task
    from harness.methods.registry import get_method
    from harness.train.job import task_hooks

    m = get_method(method_name)
    hp = m.resolve({})
    trl = dict(per_device_train_batch_size=16, num_generations=4, max_completion_length=24, learning_rate=1e-3,
               steps_per_generation=2, beta=0.0, loss_type="bnpo", max_steps=steps)
    trl.update(m.trl_overrides)
    if m.point == "config":
        trl.update(hp)
    task = smoke_task(task_name)
    data = {**TINY_REASONING["data"], "task": task_name}
    train, _ = task.splits(DataSpec(**data))
    kw = lambda tok: {"monitors": M.Monitors(spec or M.MonitorSpec(utility_samples=8), S.reasoning_protocol(tok))  # noqa
                      if monitors else None, **task_hooks({"model": TINY_REASONING["model"], "data": data}, tok)}
    return tiny_grpo_trainer(base, tmp_path / f"{method_name}-{monitors}", m, reward_funcs=[task.reward, _dense_reward],
                             hparams=hp, rows=train, trainer_kwargs=kw, **trl)


def test_head_reconstruction_equals_trl_entropy(reasoning_base, tmp_path):
    """The top-k monitor's LM head on the captured hidden states gives TRL's own token entropies."""
    trainer, _, _ = _trainer(reasoning_base, tmp_path, "grpo")
    trainer.model.train()
    inputs = trainer._generate_and_score_completions([trainer.train_dataset[i] for i in range(8)])
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
    att = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
    t = inputs["completion_ids"].size(1)
    chunks = []
    with torch.no_grad(), trainer._hidden_capture(trainer.model, t, chunks):
        _, ents, _ = trainer._get_per_token_logps_and_entropies(trainer.model, ids, att, t, compute_entropy=True)
    mask = inputs["completion_mask"]
    _, _, full = S.topk_from_hidden(trainer.model, torch.cat(chunks), mask, 5, trainer.temperature)
    torch.testing.assert_close(full, ents[mask > 0].float(), rtol=0, atol=1e-5)


def _run(base, tmp_path, method, monitors, **kw):
    trainer, _, logs = _trainer(base, tmp_path, method, monitors, **kw)
    trainer.train()
    rows = [r for r in logs if "loss" in r]
    return trainer, rows


@pytest.mark.parametrize("method", ["grpo", "clip_cov", "siren", "egpo"])
def test_monitors_never_change_training(reasoning_base, tmp_path, method):
    """Same seed, with and without monitors: the same loss at every step and the same final weights, bit for bit
    (TRL's loss pass, a loss method on TRL's log-probs, one on full logits, an advantage method with token stats)."""
    from transformers import AutoModelForCausalLM

    off, rows_off = _run(reasoning_base, tmp_path, method, False, steps=3)
    on, rows_on = _run(reasoning_base, tmp_path, method, True, steps=3)
    for key in ("loss", "reward", "entropy", "completions/mean_length", "grad_norm"):
        assert [r.get(key) for r in rows_on] == [r.get(key) for r in rows_off], key
    assert any(r["loss"] != 0 for r in rows_off)  # not vacuous: the policy is updated ...
    start = AutoModelForCausalLM.from_pretrained(reasoning_base).state_dict()
    assert any(not torch.equal(start[k], v) for k, v in off.model.state_dict().items())  # ... and moves
    for (name, a), b in zip(off.model.state_dict().items(), on.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert all("monitor/topk/entropy" in r and "monitor/topk/mass" in r for r in rows_on)
    assert "monitor/utility/h_start" in rows_on[0] and "monitor/utility/h_start" in rows_on[2]  # generation steps
    assert not any(k.startswith("monitor/") for r in rows_off for k in r)
    for r in rows_on:
        assert 0 < r["monitor/topk/mass"] <= 1 and 0 <= r["monitor/topk/entropy"] <= math.log(5) + 1e-6


def test_interval_label_free_and_head_check(reasoning_base, tmp_path):
    _, rows = _run(reasoning_base, tmp_path, "grpo", True, steps=4, spec=M.MonitorSpec(every_steps=2, utility_samples=4))
    assert ["monitor/topk/entropy" in r for r in rows] == [True, False, True, False]
    assert [r.get("monitor/utility/scored") for r in rows] == [4.0, None, 4.0, None]
    # a label-free method: the rows carry no answer, so the utility monitor has nothing to read
    _, rows = _run(reasoning_base, tmp_path, "empo", True, steps=2)
    assert rows and "monitor/topk/entropy" in rows[0] and not any("monitor/utility/scored" in r for r in rows)
    # a head the reconstruction gets wrong (soft-capping TRL does not apply): the indicator turns off, with a warning
    trainer, _, logs = _trainer(reasoning_base, tmp_path, "grpo", steps=1)
    trainer.model.config.final_logit_softcapping = 0.5
    with pytest.warns(UserWarning, match="top-k monitor off"):
        trainer.train()
    assert not any("monitor/topk/entropy" in r for r in logs) and "monitor/utility/h_start" in logs[0]


def test_utility_monitor_turns_off_when_packed_rows_disagree_with_plain_forwards(reasoning_base, tmp_path,
                                                                                 monkeypatch):
    real = S.chain_scores

    def ignores_the_mask(*a, **k):  # what a model whose attention ignores 4-D masks would give
        return [([h + 0.5 for h in hs], nll) for hs, nll in real(*a, **k)]

    monkeypatch.setattr(M, "chain_scores", ignores_the_mask)
    trainer, _, logs = _trainer(reasoning_base, tmp_path, "grpo", steps=3)
    with pytest.warns(UserWarning, match="reasoning-utility monitor off"):
        trainer.train()
    rows = [r for r in logs if "loss" in r]
    assert not any("monitor/utility/scored" in r for r in rows) and all("monitor/topk/mass" in r for r in rows)


def test_calculator_task_tool_tokens_out_of_the_top_k_mean(tmp_path_factory, tmp_path):
    """reasoning_calc: rollouts through the environment (TRL's rollout_func); the top-k means skip the tokens the
    calculator wrote, the utility monitor scores chains with tool calls, and training stays bit-identical."""
    from harness.train.pretrain import pretrain

    base = tmp_path_factory.mktemp("calc") / "base"
    data = {**TINY_REASONING["data"], "task": "reasoning_calc"}
    pretrain(base, TINY_REASONING["model"], {**TINY_REASONING["pretrain"], "tool_rate": 1.0}, data, log=lambda *a: None)
    off, rows_off = _run(base, tmp_path, "grpo", False, steps=2, task_name="reasoning_calc")
    on, rows_on = _run(base, tmp_path, "grpo", True, steps=2, task_name="reasoning_calc")
    assert [r["loss"] for r in rows_on] == [r["loss"] for r in rows_off]
    assert rows_on[0]["tool/calls_per_completion"] > 0 and rows_on[0]["monitor/utility/scored"] == 8
    seen = []
    orig = S.topk_from_hidden

    def spy(model, hidden, mask, k, t):
        seen.append(mask.clone())
        return orig(model, hidden, mask, k, t)

    trainer, _, _ = _trainer(base, tmp_path, "grpo", steps=1, task_name="reasoning_calc")
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer's loop, which this part does not run
    inputs = trainer._generate_and_score_completions([trainer.train_dataset[i] for i in range(16)])
    own = inputs["completion_mask"] * inputs["tool_mask"]
    assert not torch.equal(own, inputs["completion_mask"])  # the calculator wrote some tokens
    M.topk_from_hidden, keep = spy, M.topk_from_hidden
    try:
        trainer.compute_loss(trainer.model, inputs)
    finally:
        M.topk_from_hidden = keep
    assert len(seen) == 1 and torch.equal(seen[0], own)


def test_top_k_must_be_below_the_vocabulary(reasoning_base, tmp_path):
    with pytest.raises(ConfigError, match=r"top_k must be between 1 and the vocabulary size - 1 \(23\)"):
        _trainer(reasoning_base, tmp_path, "grpo", spec=M.MonitorSpec(top_k=24))


# --------------------------------------------------------------------------------------------- cards, claims --
def _result(method, seed, metrics, heldout=None):
    return {"job": {"method": method, "seed": seed, "tier": "smoke-reasoning"}, "metrics": metrics,
            "heldout": heldout or []}


def _verdicts(paper, results):
    from harness.claims.registry import evaluate_claims

    return {c["id"]: c["verdict"] for c in evaluate_claims(load_card(paper), "smoke-reasoning", results)}


def test_reasoning_utility_claims_on_synthetic_runs():
    card = load_card("reasoning_utility")
    assert {c["check"] for c in card["claims"]} == {"train_metric_window", "reported_average"}

    def rows(gap, slope_c, slope_i, steps_gap, within):
        return [{"step": s, "monitor/utility/falling_frac_gap": gap, "monitor/utility/slope_correct": slope_c,
                 "monitor/utility/slope_incorrect": slope_i, "monitor/utility/steps_gap": steps_gap,
                 "monitor/utility/steps_gap_within_level": within} for s in range(1, 101, 2)]

    paper_like = [_result("grpo", s, rows(0.3, -0.1, 0.01, 1.5, 0.5)) for s in (42, 7, 1)]
    v = _verdicts("reasoning_utility", paper_like)
    assert v == {"ru_correct_chains_fall_more_often": "reproduced", "ru_correct_chains_reduce_answer_entropy": "reproduced",
                 "ru_incorrect_chains_flat_or_rising": "reproduced", "ru_incorrect_chains_longer": "reproduced",
                 "ru_incorrect_chains_longer_within_level": "reproduced",
                 "ru_slope_separates_correct_chains_on_math": "not_run"}
    # what the 4-step check of the base model suggests: every chain falls; length explained by difficulty
    smoke_like = [_result("grpo", s, rows(0.0, -0.06, -0.05, 1.5, 0.0)) for s in (42, 7, 1)]
    v = _verdicts("reasoning_utility", smoke_like)
    assert v["ru_correct_chains_fall_more_often"] == "not_reproduced"
    assert v["ru_incorrect_chains_flat_or_rising"] == "not_reproduced"
    assert v["ru_incorrect_chains_longer"] == "reproduced"
    assert v["ru_incorrect_chains_longer_within_level"] == "not_reproduced"
    assert _verdicts("reasoning_utility", paper_like[:2])["ru_incorrect_chains_longer"] == "inconclusive"  # 2 seeds
    unmonitored = [_result("grpo", s, [{"step": 1, "entropy": 0.1}]) for s in (42, 7, 1)]
    assert set(_verdicts("reasoning_utility", unmonitored).values()) == {"inconclusive", "not_run"}


def _monitored(method, seed, ent, mass, heldout_ent, acc):
    """A run whose monitor follows ent(step) and mass(step); held-out evaluations every 10 steps."""
    metrics = [{"step": s, "monitor/topk/entropy": ent(s), "monitor/topk/mass": mass(s)} for s in range(1, 101)]
    heldout = [{"step": e, "entropy": heldout_ent(e), "sampled_acc": acc(e)} for e in range(0, 101, 10)]
    return _result(method, seed, metrics, heldout)


def test_daa_overopt_claims_on_synthetic_runs():
    import math as m_

    card = load_card("daa_overopt")
    assert {c["check"] for c in card["claims"]} >= {"train_metric_change", "monitor_leads_heldout"}
    runs = []
    for seed in (42, 7, 1):
        # window-to-window wiggle in the monitor, echoed by the held-out measures one window later
        wig = lambda s, seed=seed: 0.01 * m_.sin(seed + (s - 1) // 10)  # noqa: E731
        lag = lambda e, seed=seed: 0.01 * m_.sin(seed + e // 10 - 2)  # noqa: E731
        runs.append(_monitored("grpo", seed, lambda s, w=wig: 0.12 - 0.0008 * s + w(s),
                               lambda s, w=wig: 0.999 - 0.00002 * s + 0.01 * w(s),
                               lambda e, w=lag: 0.12 - 0.0008 * e + w(e), lambda e, w=lag: 0.5 + w(e)))
        runs.append(_monitored("kl_cov", seed, lambda s, w=wig: 0.2 + w(s), lambda s, w=wig: 0.99 + 0.01 * w(s),
                               lambda e, w=lag: 0.2 + w(e), lambda e, w=lag: 0.5 + w(e)))
    v = _verdicts("daa_overopt", runs)
    assert v == {"daa_grpo_topk_entropy_falls": "reproduced", "daa_grpo_topk_mass_shrinks": "reproduced",
                 "daa_kl_cov_keeps_topk_entropy_above_grpo": "reproduced",
                 "daa_topk_entropy_fall_precedes_diversity_fall": "reproduced",
                 "daa_topk_mass_fall_precedes_accuracy_drop": "reproduced",
                 "daa_indicators_flag_dpo_overoptimisation": "not_run"}
    # rising indicators, and held-out changes that ignore them
    flat = [_monitored("grpo", s, lambda t: 0.1 + 0.001 * t, lambda t: 0.99 + 0.00005 * t,
                       lambda e, s=s: 0.1 + 0.01 * m_.cos(3 * e + s), lambda e: 0.5) for s in (42, 7, 1)]
    flat += [_monitored("kl_cov", s, lambda t: 0.1, lambda t: 0.99, lambda e: 0.1, lambda e: 0.5) for s in (42, 7, 1)]
    v = _verdicts("daa_overopt", flat)
    assert v["daa_grpo_topk_entropy_falls"] == "not_reproduced" and v["daa_grpo_topk_mass_shrinks"] == "not_reproduced"
    assert v["daa_kl_cov_keeps_topk_entropy_above_grpo"] == "not_reproduced"
    assert v["daa_topk_mass_fall_precedes_accuracy_drop"] == "inconclusive"  # constant accuracy: nothing to follow
    # only GRPO trained: the KL-Cov claims are not run, not inconclusive
    only = _verdicts("daa_overopt", [r for r in runs if r["job"]["method"] == "grpo"])
    assert only["daa_kl_cov_keeps_topk_entropy_above_grpo"] == "not_run"


def test_lead_pairs_align_each_window_with_the_next_heldout_change():
    from harness.claims.monitor_checks import lead_pairs

    run = _result("grpo", 1, [{"step": s, "x": float(s // 10)} for s in range(1, 41)],
                  [{"step": e, "h": float(e * e)} for e in (0, 10, 20, 30, 40)])
    # windows (0,10], (10,20], (20,30], (30,40]; pairs for j = 2, 3: window change vs the next held-out change
    w = [sum(s // 10 for s in range(a + 1, a + 11)) / 10 for a in (0, 10, 20)]
    assert lead_pairs(run, "x", "h") == [(w[1] - w[0], 900.0 - 400.0), (w[2] - w[1], 1600.0 - 900.0)]
