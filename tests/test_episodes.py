"""Multi-turn episodes on the smoke household (:mod:`harness.evaluate.episodes`, via :mod:`harness.train.episodes`): the token layout (``env_mask`` 0 on
exactly the tokens the environment wrote, checked by replaying every episode on a fresh game), groups share a
game, a scripted expert wins every game, untagged turns are counted and penalised, the stopping rules, seeded
determinism, and one GRPO step through TRL with the rollout function, where the environment tokens get exactly zero
gradient. A tiny random Qwen2 on a word-level tokenizer; the whole file runs in well under a minute."""
from __future__ import annotations

import math
import string
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from harness.envs.household import HouseholdEnv, expert_plan, vocabulary  # noqa: E402
from harness.envs.agent import COMPACT, VERL_AGENT, agent_reward, episode_reward, parse_action  # noqa: E402
from harness.train.episodes import make_rollout_func, run_episodes  # noqa: E402

N_GAMES = 12


def env_factory(max_steps: int = 50):
    return lambda: HouseholdEnv("train", N_GAMES, max_steps=max_steps)


@pytest.fixture(scope="module")
def tok():
    from harness.data.wordlevel import word_level_tokenizer

    words = sorted({w for w in vocabulary() if len(w) > 1} | set(COMPACT.words()) | set(VERL_AGENT.words()))
    chars = sorted(set(string.ascii_letters + string.digits + string.punctuation + " \n") - set(words))
    return word_level_tokenizer(["<pad>", "<bos>", "<eos>", "<unk>"] + words + chars, words)


@pytest.fixture(scope="module")
def model(tok):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, intermediate_size=64, max_position_embeddings=4096,
                      tie_word_embeddings=True, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id)
    return Qwen2ForCausalLM(cfg).eval()


def play(model, tok, game_ids, **kw):
    settings = dict(num_generations=2, max_turns=3, max_new_tokens_per_turn=8, seed=0)
    settings.update(kw)
    factory = settings.pop("env_factory", env_factory())
    with torch.no_grad():
        return run_episodes(model, tok, factory, game_ids, **settings)


def check_layout(ep, tok, template=COMPACT, factory=None):
    """Replay ``ep``'s parsed actions on a fresh game: the prompt is the rendered first observation; each turn is a
    run of model tokens (env_mask 1, logprob < 0) then exactly the environment's rendered reply (env_mask 0,
    logprob 0), and the completion ends with one EOS written by the environment."""
    env = (factory or env_factory())()
    step = env.reset(ep.game_id)
    assert ep.prompt_ids == tok(template.render(step, env.task, first=True))["input_ids"]
    n = len(ep.completion_ids)
    assert len(ep.env_mask) == len(ep.logprobs) == len(ep.turn_ids) == n
    assert sorted(set(ep.turn_ids)) == list(range(ep.turns)) and ep.turn_ids == sorted(ep.turn_ids)
    for k, action in enumerate(ep.actions):
        idx = [i for i in range(n) if ep.turn_ids[i] == k]
        mask = [ep.env_mask[i] for i in idx]
        m = mask.index(0) if 0 in mask else len(mask)
        assert m > 0 and mask == [1] * m + [0] * (len(mask) - m)
        model_ids = [ep.completion_ids[i] for i in idx[:m]]
        env_ids = [ep.completion_ids[i] for i in idx[m:]]
        assert parse_action(tok.decode(model_ids, skip_special_tokens=True)) == action
        assert all(ep.logprobs[i] <= 0 and math.isfinite(ep.logprobs[i]) for i in idx[:m])
        assert all(ep.logprobs[i] == 0.0 for i in idx[m:])
        step = env.step(action if action is not None else "")
        if k < ep.turns - 1:
            assert env_ids == tok(template.render(step, env.task, first=False), add_special_tokens=False)["input_ids"]
        else:
            assert env_ids == ([] if model_ids[-1] == tok.eos_token_id else [tok.eos_token_id])
    assert (ep.won, ep.done, ep.steps) == (step.won, step.done, step.steps)
    return env


def certain_output(tok, input_ids, rows: list[list[int]]):
    """What HF ``generate`` returns for ``rows`` (new token ids per row, right-padded): the sequences and per-step
    scores giving each written token probability 1."""
    width, pad = max(map(len, rows)), tok.pad_token_id
    new = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    scores = tuple(torch.full((len(rows), len(tok)), -1e9).scatter(1, new[:, t:t + 1], 0.0) for t in range(width))
    return SimpleNamespace(sequences=torch.cat([input_ids, new], 1), scores=scores)


class Scripted:
    """A fake model: ``generate`` writes the next scripted turn (a string; ``None`` = EOS only) of each row's game,
    found by the row's first prompt; every token has probability 1. All rows of a game advance together."""
    device = torch.device("cpu")

    def __init__(self, tok, scripts: dict, junk: str = "", stop: str = "</action>"):
        self.tok, self.scripts, self.turn, self.junk, self.stop = tok, scripts, {}, junk, stop

    def generate(self, input_ids, attention_mask, generation_config, **kw):
        rows, advanced = [], set()
        for ids, att in zip(input_ids, attention_mask):
            ctx = tuple(ids[att.bool()].tolist())
            key = next(p for p in self.scripts if ctx[:len(p)] == p)
            if key not in advanced:
                self.turn[key] = self.turn.get(key, -1) + 1
                advanced.add(key)
            text = self.scripts[key][self.turn[key]]
            new = self.tok(text + self.junk, add_special_tokens=False)["input_ids"] if text else []
            rows.append((new + [self.tok.eos_token_id] * (self.stop not in (text or "")))
                        [:generation_config.max_new_tokens])
        return certain_output(self.tok, input_ids, rows)


def scripts_for(tok, game_ids, turns_of, first_ids=None):
    """{first prompt ids of each game: turns_of(game)}, for :class:`Scripted`."""
    env, out = HouseholdEnv("train", N_GAMES), {}
    first_ids = first_ids or (lambda text: tok(text)["input_ids"])
    for gid in game_ids:
        step = env.reset(gid)
        out[tuple(first_ids(COMPACT.render(step, env.task, first=True)))] = turns_of(env.game(gid))
    return out


def expert_turns(game):
    return [f"<action>{a}</action>" for a in expert_plan(game)]


# -- pure pieces --------------------------------------------------------------------------------------------------
def test_parse_action_and_reward_golden():
    assert parse_action("<think>it is on the bed</think><action> go to bed 1 </action>") == "go to bed 1"
    assert parse_action("<action>open drawer 1</action> <action>look</action>") == "open drawer 1"
    assert parse_action("go to bed 1") is None and parse_action("<action>go to bed 1") is None
    assert episode_reward(True, 0, 0.1) == 10.0
    assert episode_reward(True, 3, 0.1) == pytest.approx(9.7)
    assert episode_reward(False, 2, 0.5) == -1.0
    assert agent_reward(["a", "b"], episode_reward=[10.0, -0.2]) == [10.0, -0.2]


def test_template_words_tokenize_without_unknowns(tok):
    env = HouseholdEnv("train", N_GAMES)
    step = env.reset("household-train-3")
    for template in (COMPACT, VERL_AGENT):
        text = template.render(step, env.task, first=True) + template.render(step, env.task, first=False)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids and tok.decode(ids) == text
    assert {"<action>", "</action>", "actions"} <= set(COMPACT.words())


# -- layout, groups, stopping, determinism (tiny random model) ----------------------------------------------------
def test_layout_groups_and_env_mask(model, tok):
    games = ["household-train-0", "household-train-1", "household-train-2"]
    batch = play(model, tok, games, num_generations=3, max_turns=3)
    eps = batch.episodes
    assert [e.game_id for e in eps] == [g for g in games for _ in range(3)]  # a group plays one game
    for g in range(3):
        group = eps[3 * g:3 * g + 3]
        assert len({tuple(e.prompt_ids) for e in group}) == 1
        assert len({e.task_type for e in group}) == 1
    assert eps[0].prompt_ids != eps[3].prompt_ids
    for ep in eps:
        check_layout(ep, tok)
        assert ep.turns == 3 and ep.steps == 3 and ep.truncated and not ep.won  # a random model wins nothing
        assert ep.invalid_actions + ep.unknown_actions <= 3
        assert 0 < sum(ep.env_mask) < len(ep.env_mask)
    out = batch.rollout()
    assert {"prompt_ids", "completion_ids", "logprobs", "env_mask", "won", "steps", "invalid_actions", "task_type",
            "episode_reward", "game_id", "turn_ids"} <= set(out)
    assert all(len(v) == 9 for v in out.values())
    assert [len(m) for m in out["env_mask"]] == [len(c) for c in out["completion_ids"]]
    m = batch.metrics()
    assert m["episodes/success_rate"] == 0.0 and m["episodes/turns"] == 3.0 and m["episodes/truncated_frac"] == 1.0
    assert m["episodes/model_tokens"] + m["episodes/env_tokens"] == sum(map(len, out["completion_ids"])) / 9


def test_stops_at_env_budget_max_turns_and_token_cap(model, tok):
    short = play(model, tok, ["household-train-4"], max_turns=5, env_factory=env_factory(max_steps=2))
    for ep in short.episodes:  # the game's own budget ends it: done, not won, not truncated
        assert (ep.turns, ep.steps, ep.done, ep.won, ep.truncated) == (2, 2, True, False, False)
        check_layout(ep, tok, factory=env_factory(max_steps=2))
    cap = len(short.episodes[0].prompt_ids) + 150
    capped = play(model, tok, ["household-train-4"], max_turns=6, max_episode_tokens=cap)
    for ep in capped.episodes:
        assert len(ep.prompt_ids) + len(ep.completion_ids) <= cap and 1 <= ep.turns < 6 and ep.truncated
        check_layout(ep, tok)
    with pytest.raises(ValueError, match="no room for one turn"):
        play(model, tok, ["household-train-4"], max_episode_tokens=10)


def test_seeded_runs_are_identical_and_leave_the_global_rng_alone(model, tok):
    state = torch.get_rng_state()
    a, b = (play(model, tok, ["household-train-5"], seed=0) for _ in range(2))
    c = play(model, tok, ["household-train-5"], seed=1)
    assert torch.equal(state, torch.get_rng_state())
    ids = lambda batch: [e.completion_ids for e in batch.episodes]  # noqa: E731
    assert ids(a) == ids(b) and ids(a) != ids(c)
    assert [e.logprobs for e in a.episodes] == [e.logprobs for e in b.episodes]


def test_bad_settings_get_clear_errors(model, tok):
    with pytest.raises(ValueError, match="history_length must be None"):
        play(model, tok, ["household-train-0"], history_length=2)
    with pytest.raises(ValueError, match="max_turns must be an integer >= 1"):
        play(model, tok, ["household-train-0"], max_turns=0)
    with pytest.raises(KeyError, match="household-train-0"):
        play(model, tok, ["household-train-99"])


# -- scripted policies --------------------------------------------------------------------------------------------
def test_scripted_expert_wins_every_game_with_reward_10(tok):
    games = HouseholdEnv("train", N_GAMES).game_ids()
    policy = Scripted(tok, scripts_for(tok, games, expert_turns))
    batch = run_episodes(policy, tok, env_factory(), games, num_generations=2, max_turns=12,
                         max_new_tokens_per_turn=16, invalid_penalty=0.1, seed=0)
    assert len(batch.episodes) == 2 * N_GAMES
    plans = {g: expert_plan(HouseholdEnv("train", N_GAMES).game(g)) for g in games}
    for ep in batch.episodes:
        assert ep.won and ep.done and not ep.truncated and ep.reward == 10.0
        assert ep.actions == plans[ep.game_id] and ep.turns == ep.steps == len(plans[ep.game_id]) < 12
        assert ep.invalid_actions == ep.unknown_actions == 0
        check_layout(ep, tok)
    assert batch.metrics()["episodes/success_rate"] == 1.0
    assert {k for k in batch.metrics() if k.startswith("episodes/success/")} == {
        f"episodes/success/{t}" for t in {e.task_type for e in batch.episodes}}


def test_untagged_turn_is_invalid_penalised_and_still_steps(tok):
    games = ["household-train-0", "household-train-2"]
    # turn 1 names a real action without tags, turn 2 a tagged action the game does not know, then the plan
    policy = Scripted(tok, scripts_for(tok, games, lambda g: [expert_plan(g)[0], "<action>fly away</action>",
                                                              *expert_turns(g)]))
    batch = run_episodes(policy, tok, env_factory(), games, num_generations=2, max_turns=12,
                         max_new_tokens_per_turn=16, invalid_penalty=0.25, seed=0)
    for ep in batch.episodes:
        assert ep.actions[:2] == [None, "fly away"] and ep.won
        assert (ep.invalid_actions, ep.unknown_actions) == (1, 1)
        assert ep.reward == pytest.approx(10.0 - 0.25) and ep.steps == ep.turns == len(ep.actions)
        env_text = tok.decode([t for t, m, k in zip(ep.completion_ids, ep.env_mask, ep.turn_ids) if m == 0 and k == 0])
        assert env_text.startswith("\nNothing happens.")  # the game stepped with nothing and said so
        check_layout(ep, tok)
    never = Scripted(tok, scripts_for(tok, games, lambda g: ["go to bed 1"] * 4))
    batch = run_episodes(never, tok, env_factory(), games, num_generations=1, max_turns=4,
                         max_new_tokens_per_turn=16, invalid_penalty=0.1, seed=0)
    for ep in batch.episodes:  # every turn untagged: stops at max_turns, penalised per turn
        assert ep.invalid_actions == ep.turns == ep.steps == 4 and ep.truncated
        assert ep.reward == pytest.approx(-0.4)
        check_layout(ep, tok)


def test_chat_template_wraps_turns_and_masks_the_markers(tok):
    """With a chat template the prompt ends with the assistant header and every reply is end-of-turn, user header,
    the rendered observation, end-of-turn, assistant header, all written by the environment (env_mask 0)."""
    import copy

    chat = copy.deepcopy(tok)
    chat.chat_template = ("{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}<eos>{% endfor %}"
                          "{% if add_generation_prompt %}[assistant]{% endif %}")
    wrap = lambda text: chat(f"[user]{text}<eos>[assistant]", add_special_tokens=False)["input_ids"]  # noqa: E731
    games = ["household-train-1", "household-train-3"]
    policy = Scripted(chat, scripts_for(chat, games, expert_turns, first_ids=wrap))
    batch = run_episodes(policy, chat, env_factory(), games, num_generations=2, max_turns=12,
                         max_new_tokens_per_turn=16, seed=0)
    for ep in batch.episodes:
        assert ep.won and ep.invalid_actions == 0
        env = env_factory()()
        step = env.reset(ep.game_id)
        assert ep.prompt_ids == wrap(COMPACT.render(step, env.task, first=True))
        for k, action in enumerate(ep.actions):
            step = env.step(action)
            env_ids = [t for t, m, j in zip(ep.completion_ids, ep.env_mask, ep.turn_ids) if m == 0 and j == k]
            expected = (f"<eos>[user]{COMPACT.render(step, env.task, first=False)}<eos>[assistant]"
                        if k < ep.turns - 1 else "<eos>")
            assert chat.decode(env_ids) == expected


def test_multi_token_stop_string(tok):
    """A tokenizer without the tags as words spells ``</action>`` in characters: the text stop criterion fires on
    the token that completes it, and a turn is cut there even when the model writes on."""
    from harness.data.wordlevel import word_level_tokenizer
    from harness.evaluate.turn_sampling import _StopText

    words = [w for w in tok.get_vocab() if len(w) > 1 and not w.startswith("<")] + ["<pad>", "<eos>"]
    plain = word_level_tokenizer(sorted(tok.get_vocab(), key=tok.get_vocab().get), words)
    assert len(plain("</action>", add_special_tokens=False)["input_ids"]) > 1
    ids = torch.tensor([plain("look <action>look</action>", add_special_tokens=False)["input_ids"]])
    stop = _StopText(plain, start=2, stops=("</action>",))
    assert stop(ids, None).tolist() == [True] and stop(ids[:, :-1], None).tolist() == [False]
    games = ["household-train-0"]
    policy = Scripted(plain, scripts_for(plain, games, expert_turns), junk=" and more")
    batch = run_episodes(policy, plain, env_factory(), games, num_generations=2, max_turns=12,
                         max_new_tokens_per_turn=40, seed=0)
    for ep in batch.episodes:
        assert ep.won and ep.actions == expert_plan(HouseholdEnv("train", N_GAMES).game("household-train-0"))
        for k in range(ep.turns):  # each turn's model tokens end with the stop string: the junk was cut off
            turn = [t for t, m, j in zip(ep.completion_ids, ep.env_mask, ep.turn_ids) if m == 1 and j == k]
            assert plain.decode(turn) == f"<action>{ep.actions[k]}</action>"


# -- one GRPO step through TRL ------------------------------------------------------------------------------------
def test_grpo_step_trains_only_model_tokens(model, tok, tmp_path):
    """TRL's GRPOTrainer with the rollout function: the rollout sees each game id ``num_generations`` times
    consecutively; the loss is finite; the gradient of the loss w.r.t. every token's log-probability is exactly 0
    on environment tokens and non-zero on model tokens of samples with an advantage."""
    import copy

    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    seen: list[list] = []
    rollout = make_rollout_func(env_factory(), max_turns=3, max_new_tokens_per_turn=6, invalid_penalty=0.1)

    def spy(prompts, trainer):
        seen.append(list(prompts))
        return rollout(prompts, trainer)

    def tie_break(completion_ids, **kw):  # distinct rewards within a group, so advantages are non-zero
        return [sum(i * t for i, t in enumerate(c)) % 101 / 101 for c in completion_ids]

    class Probe(GRPOTrainer):
        def _get_per_token_logps_and_entropies(self, *a, **kw):
            logps, ents, aux = super()._get_per_token_logps_and_entropies(*a, **kw)
            if logps.requires_grad:
                logps.retain_grad()
                self.probe_logps = logps
            return logps, ents, aux

        def _compute_loss(self, model, inputs):
            self.probe_inputs, self.probe_loss = inputs, super()._compute_loss(model, inputs)
            return self.probe_loss

    args = GRPOConfig(output_dir=str(tmp_path / "out"), use_cpu=True, bf16=False, gradient_checkpointing=False,
                      per_device_train_batch_size=4, num_generations=2, max_completion_length=64, max_steps=1,
                      learning_rate=1e-3, logging_steps=1, report_to="none", save_strategy="no", seed=0,
                      disable_tqdm=True)
    rows = Dataset.from_list([{"prompt": g} for g in HouseholdEnv("train", N_GAMES).game_ids()[:4]])
    policy = copy.deepcopy(model).train()
    trainer = Probe(model=policy, reward_funcs=[agent_reward, tie_break], args=args, train_dataset=rows,
                    processing_class=tok, rollout_func=spy)
    trainer.train()
    assert seen and all(p[0] == p[1] and p[2] == p[3] for p in seen)  # groups of G=2 identical game ids
    assert math.isfinite(float(trainer.probe_loss.detach()))
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    logs = trainer.state.log_history[0]
    assert math.isfinite(logs["loss"]) and "episodes/success_rate" in logs and "episodes/env_tokens" in logs
    inputs, grad = trainer.probe_inputs, trainer.probe_logps.grad
    env_tok = (inputs["tool_mask"] == 0) & (inputs["completion_mask"] == 1)
    model_tok = (inputs["tool_mask"] == 1) & (inputs["completion_mask"] == 1)
    assert env_tok.sum() > 0 and model_tok.sum() > 0
    assert torch.count_nonzero(grad[env_tok]) == 0  # environment tokens contribute nothing to the loss
    has_adv = (inputs["advantages"].abs() > 0).view(-1, 1).expand_as(model_tok)
    assert torch.count_nonzero(grad[model_tok & has_adv]) == int((model_tok & has_adv).sum()) > 0


def test_harness_trainer_takes_the_rollout_func(model, tok, tmp_path):
    """``HarnessGRPOTrainer(rollout_func=...)`` passes the function through to TRL: one step of the ``grpo`` method
    logs the metrics contract (finite) and the episode metrics, and counts only model tokens as completion length."""
    import copy

    from datasets import Dataset
    from trl import GRPOConfig

    from harness.methods.registry import get_method
    from harness.train.trainer import REQUIRED_METRICS, HarnessGRPOTrainer

    args = GRPOConfig(output_dir=str(tmp_path / "out"), use_cpu=True, bf16=False, gradient_checkpointing=False,
                      per_device_train_batch_size=4, num_generations=2, max_completion_length=64, max_steps=1,
                      learning_rate=1e-3, logging_steps=1, report_to="none", save_strategy="no", seed=0,
                      disable_tqdm=True)
    rows = Dataset.from_list([{"prompt": g} for g in HouseholdEnv("train", N_GAMES).game_ids()[4:8]])
    trainer = HarnessGRPOTrainer(model=copy.deepcopy(model).train(), reward_funcs=[agent_reward], args=args,
                                 train_dataset=rows, processing_class=tok, method=get_method("grpo"),
                                 rollout_func=make_rollout_func(env_factory(), max_turns=2, max_new_tokens_per_turn=6))
    trainer.train()
    logs = trainer.state.log_history[0]
    assert all(math.isfinite(logs[k]) for k in REQUIRED_METRICS)
    assert logs["completions/mean_length"] == logs["episodes/model_tokens"] < logs["episodes/env_tokens"]


# -- a tool-call turn format (ARPO's: the call stops the turn, the result continues the model's message) ----------
class CalcEnv:
    """A toy tool environment: ``<calc>a+b</calc>`` is answered with the sum; a turn without a call is the final
    answer, scored by the environment (``info["reward"]``: 1 if it names the expected sum)."""
    task_type = "calc"

    def __init__(self):
        self.task, self.steps = "", 0

    def game_ids(self):
        return ["q0", "q1"]

    def reset(self, game_id):
        from harness.envs.base import Step

        self.task, self.want, self.steps = {"q0": ("add 2 3", 5), "q1": ("add 4 4", 8)}[game_id] + (0,)
        return Step(self.task, ())

    def step(self, action):
        import re

        from harness.envs.base import Step

        self.steps += 1
        m = re.search(r"<calc>(\d+)\+(\d+)</calc>", action)
        if m:
            return Step(str(int(m.group(1)) + int(m.group(2))), (), steps=self.steps)
        got = re.findall(r"\d+", action)
        score = float(bool(got) and int(got[-1]) == self.want)
        return Step("", (), won=score == 1.0, done=True, steps=self.steps, info={"reward": score})

    def close(self):
        pass



def tool_template():
    from harness.envs.agent import Template

    return Template(first="{observation}\n", turn=" <result> {observation} </result> ", stops=("</calc>",),
                    parser="whole_turn", inline=True)


@pytest.mark.parametrize("final,reward", [("so 5", 1.0), ("so 6", 0.0)])
def test_tool_call_turns_inline_results_and_environment_reward(tok, final, reward):
    """A template with its own turn format: the turn stops at ``</calc>`` (a multi-token stop here), the environment
    receives the whole turn, its result is appended inline (plain tokens, env_mask 0) and the model's next turn
    continues; the final turn (no call) ends the episode with the environment's score as the reward."""
    tmpl = tool_template()
    first = tuple(tok(tmpl.render(CalcEnv().reset("q0"), "add 2 3", first=True))["input_ids"])
    policy = Scripted(tok, {first: ["<calc>2+3</calc>", final]}, junk=" junk", stop="</calc>")
    batch = run_episodes(policy, tok, CalcEnv, ["q0"], num_generations=2, max_turns=4, max_new_tokens_per_turn=40,
                         seed=0, template=tmpl, invalid_penalty=0.5)
    for ep in batch.episodes:
        assert ep.turns == 2 and ep.invalid_actions == 0 and ep.done and ep.won == (reward == 1.0)
        assert ep.actions[0] == "<calc>2+3</calc>" and ep.actions[1].startswith(final)
        assert ep.reward == ep.env_reward == reward  # the environment's score, not 10 * won
        turn0 = [t for t, j in zip(ep.completion_ids, ep.turn_ids) if j == 0]
        model0 = [t for t, m, j in zip(ep.completion_ids, ep.env_mask, ep.turn_ids) if j == 0 and m == 1]
        assert tok.decode(model0) == "<calc>2+3</calc>"  # cut at the stop: the junk never entered the episode
        assert turn0[len(model0):] == tok(" <result> 5 </result> ", add_special_tokens=False)["input_ids"]


class Stream:
    """A fake model that writes one fixed response per game, whatever the call's token cap: ``segments[k]`` (token
    ids) is its k-th turn, and ``results[k]`` the inline tool result the environment appends after it. Each call
    continues the response from what the context already holds (its length after the prompt), up to the cap, and
    writes ``junk`` on after a segment that does not end with EOS (a stopping rule must cut it); every token has
    probability 1. Counts its calls."""
    device = torch.device("cpu")

    def __init__(self, tok, prompt: list[int], segments: list[list[int]], results: list[list[int]],
                 junk: list[int] = ()):
        self.tok, self.prompt, self.calls, self.junk = tok, prompt, 0, list(junk)
        self.layout = []  # (start in the completion, segment)
        at = 0
        for k, seg in enumerate(segments):
            self.layout.append((at, seg))
            at += len(seg) + (len(results[k]) if k < len(results) else 0)

    def generate(self, input_ids, attention_mask, generation_config, **kw):
        self.calls += 1
        rows = []
        for ids, att in zip(input_ids, attention_mask):
            done = int(att.sum()) - len(self.prompt)
            start, seg = next((a, s) for a, s in self.layout if a <= done < a + len(s))
            out = seg + (self.junk if seg[-1] != self.tok.eos_token_id else [])
            rows.append(out[done - start:][:generation_config.max_new_tokens])
        return certain_output(self.tok, input_ids, rows)


def _calc_stream(tok):
    from dataclasses import replace

    tmpl = replace(tool_template(), continue_cut=True)
    prompt = tok(tmpl.render(CalcEnv().reset("q0"), "add 2 3", first=True))["input_ids"]
    call = tok("let me add <calc>2+3</calc>", add_special_tokens=False)["input_ids"]
    final = tok("so 5", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    result = tok(" <result> 5 </result> ", add_special_tokens=False)["input_ids"]
    return tmpl, prompt, call, final, result


def test_a_continued_template_samples_a_cut_turn_on_until_it_stops(tok):
    """``continue_cut`` (ARPO's segments, bounded by the response budget only): a turn the per-turn cap cuts is
    sampled on, the environment not stepped, until its stop string or EOS, for every cap from 1 token up, including
    caps that split the multi-token stop ``</calc>`` across two calls; the episode is the one an uncapped turn gives.
    Without the switch the same cut turn is read as it is (the call never made)."""
    from dataclasses import replace

    tmpl, prompt, call, final, result = _calc_stream(tok)
    stop = tok("</calc>", add_special_tokens=False)["input_ids"]
    junk = tok(" junk", add_special_tokens=False)["input_ids"]
    assert len(stop) > 1 and call[-len(stop):] == stop
    split = set()
    for cap in range(1, len(call) + 2):
        policy = Stream(tok, prompt, [call, final], [result], junk=junk)
        batch = run_episodes(policy, tok, CalcEnv, ["q0"], num_generations=2, max_turns=4, seed=0,
                             max_new_tokens_per_turn=cap, template=tmpl, max_episode_tokens=400)
        split |= {cap for k in range(len(call) - len(stop) + 1, len(call)) if k % cap == 0}
        for ep in batch.episodes:
            assert ep.turns == 2 and ep.won and ep.reward == 1.0 and ep.invalid_actions == 0
            model0 = [t for t, m, j in zip(ep.completion_ids, ep.env_mask, ep.turn_ids) if j == 0 and m == 1]
            assert model0 == call and ep.completion_ids == call + result + final  # the junk cut; the model's EOS
            assert all(lp == 0.0 for lp in ep.logprobs)
        assert policy.calls == batch.timing["generate_calls"]  # both episodes of the group in each call
        assert policy.calls == -(-len(call) // cap) + -(-len(final) // cap)
    assert split, "no cap split the stop string across two calls"
    policy = Stream(tok, prompt, [call, final], [result])
    batch = run_episodes(policy, tok, CalcEnv, ["q0"], num_generations=1, max_turns=4, seed=0,
                         max_new_tokens_per_turn=3, template=replace(tmpl, continue_cut=False), max_episode_tokens=400)
    ep = batch.episodes[0]
    assert ep.turns == 1 and ep.done and not ep.won and ep.completion_ids == call[:3] + [tok.eos_token_id]


def test_a_continued_turn_is_cut_where_the_episode_budget_ends(tok):
    """The budget bounds a continued turn: it is cut where only the closing EOS still fits (ARPO truncates the
    response at its length budget), then read as it is (here: no call, a wrong final answer); a budget without room
    for one token is refused, and a continued template without a budget too."""
    tmpl, prompt, call, final, result = _calc_stream(tok)
    budget = len(prompt) + 6 + 1
    policy = Stream(tok, prompt, [call, final], [result])
    batch = run_episodes(policy, tok, CalcEnv, ["q0"], num_generations=1, max_turns=4, seed=0,
                         max_new_tokens_per_turn=4, template=tmpl, max_episode_tokens=budget)
    ep = batch.episodes[0]
    assert ep.completion_ids == call[:6] + [tok.eos_token_id] and len(prompt) + len(ep.completion_ids) == budget
    assert ep.turns == 1 and ep.done and ep.reward == 0.0 and policy.calls == 2  # 4 tokens, then the 2 that fit
    with pytest.raises(ValueError, match="leaves no room for one turn"):
        run_episodes(policy, tok, CalcEnv, ["q0"], num_generations=1, max_turns=4, max_new_tokens_per_turn=4,
                     template=tmpl, max_episode_tokens=len(prompt) + 1)
    with pytest.raises(ValueError, match="continue_cut.*set max_episode_tokens"):
        run_episodes(policy, tok, CalcEnv, ["q0"], num_generations=1, max_turns=4, max_new_tokens_per_turn=4,
                     template=tmpl)


class BranchOnce:
    """A tree scheduler: one root per group; after each turn every live episode branches once while its group has
    room; a group that stopped playing short of its size gets a new root."""
    top_k, window = 3, 4

    def start(self, n_groups, size, vocab_size):
        self.size = size
        return [1] * n_groups

    def grow(self, live, groups):
        self.groups = groups  # the nodes, each with its turns' records
        count, branches = [len(g) for g in groups], []
        for n in live:
            if count[n.group] < self.size:
                branches.append(n)
                count[n.group] += 1
        playing = {n.group for n in live}
        return branches, [g for g in range(len(groups)) if g not in playing and count[g] < self.size]


def test_the_tree_player_sees_a_continued_turn_as_one_turn(tok):
    """The branching player (ARPO's and AEPO's paper tiers play arpo_tools trees) with a continued template: the
    scheduler grows the tree after whole turns only, a turn's record covers its first ``window`` tokens over the
    calls they took (cap 2, window 4), a branch after the call replays it, and every leaf is the whole response."""
    from harness.evaluate.branching import run_branching

    tmpl, prompt, call, final, result = _calc_stream(tok)
    sched = BranchOnce()
    with torch.no_grad():
        batch = run_branching(Stream(tok, prompt, [call, final], [result]), tok, CalcEnv, ["q0"], group_size=3,
                              scheduler=sched, max_turns=4, max_new_tokens_per_turn=2, template=tmpl,
                              max_episode_tokens=400, seed=0)
    assert [ep.completion_ids for ep in batch.episodes] == [call + result + final] * 3
    assert batch.tree["tree_parent"] == [-1, 0, -1] and all(ep.won for ep in batch.episodes)
    turns = [n.turn_logps for n in sched.groups[0]]  # per node, per own turn: no entry for a continuation call
    assert [len(t) for t in turns] == [2, 1, 2] and all(len(r) == 4 for t in turns for r in t)  # 4 tokens, 2 calls
    assert all(e[0] == 0.0 for t in turns for r in t for e in r)  # the written token's log-probability: 1
    assert batch.counts["tokens_generated"] == 2 * len(call) + 3 * len(final)


def test_template_turn_format_is_checked_and_default_protocol_fields_are_empty():
    from harness.envs.agent import TEMPLATES, Template

    with pytest.raises(ValueError, match="unknown turn parser 'json'; valid: action, whole_turn"):
        Template(first="{observation}", turn="{observation}", parser="json")
    with pytest.raises(ValueError, match="stop string"):
        Template(first="{observation}", turn="{observation}", stops=())
    action = {n: t for n, t in TEMPLATES.items() if t.parser == "action"}
    assert set(action) == {"verl_agent", "compact", "observation"}
    assert all(t.format_fields() == {} for t in action.values())  # the <action> games' protocols are unchanged
    assert TEMPLATES["arpo_tools"].format_fields()["stops"] == ["</python>", "</search>"]
    assert TEMPLATES["arpo_tools"].format_fields()["continue_cut"] is True  # in the protocol of what it plays
    assert tool_template().format_fields() == {"stops": ["</calc>"], "parser": "whole_turn", "inline": True}
