"""The GAIA agent loop (torch-free): a policy answers a task in turns, calling tools, until it writes the official
``FINAL ANSWER:`` template or a budget runs out; the official scorer's rules score the answer.

Conversation (chat messages; every later message is the policy's or the environment's, never both):

1. ``system``: the leaderboard's system prompt (:data:`harness.verify.gaia.SYSTEM_PROMPT`), then the tool
   instructions (:data:`TOOL_INSTRUCTIONS`: the call format, each tool with its argument, the budgets);
2. ``user``: the question, and the attachment's file name when the task has one;
3. then ``assistant`` (the policy's turn) and ``user`` (the environment's reply) alternate. A tool reply is one
   ``<tool_response>...</tool_response>`` block per call, sent as a user message: what Qwen-family chat templates
   render for a ``tool`` role, and what any template renders. When trained, every non-``assistant`` message after
   the prompt is environment text: no loss (:func:`completion_spans` marks it).

A call is Hermes-style JSON inside ``<tool_call>...</tool_call>`` (the format of Qwen2.5/3's templates and TRL's
tool loop); a tool takes one string, given as ``"arguments": {"<argument name>": "..."}`` or a bare string. A turn
that has ``FINAL ANSWER:`` outside its tool calls ends the episode (calls in that turn are not run). A turn with
neither is a *format error*: the environment reminds the policy of the format, and the turn counts.

Budgets (:class:`Budget`): ``max_steps`` policy turns and ``max_tool_calls`` tool calls per episode. Penalised
(``invalid``, ``reward = correct - invalid_penalty * invalid``): malformed calls, calls of unknown tools, calls past
the call budget, format-error turns. A tool that fails (timeout, flood, crash, bad file) is a *failed call*: counted,
its error text is the reply, not penalised. Nothing an agent writes can stop the loop: tools sit behind
:class:`~harness.envs.tools.Guarded` (timeout, output cap) in :func:`gaia_toolbox`.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from harness.config import ConfigError
from harness.envs.tools import (FileReader, Guarded, Limits, PythonTool, SearchBackend, ToolResult, Toolbox,
                                WebSearch, error)
from harness.verify.gaia import SYSTEM_PROMPT, extract_final_answer, score_record

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
#: where a generating policy stops its turn: one call per model turn
STOP_STRINGS = (CALL_CLOSE,)
_CALL = re.compile(re.escape(CALL_OPEN) + r"(.*?)" + re.escape(CALL_CLOSE), re.S)
#: the one argument of each GAIA tool, as the prompt names it
ARGUMENT_NAMES = {"python": "code", "read_file": "file_name", "web_search": "query"}
TOOL_INSTRUCTIONS = (
    "You can use tools. To call one, write a tool call like this and stop; its result comes back inside "
    "<tool_response> </tool_response>:\n"
    '<tool_call>\n{{"name": "python", "arguments": {{"code": "print(sum(range(1, 11)))"}}}}\n</tool_call>\n'
    "Tools (name, argument: what it does):\n{tools}\n"
    "You have at most {max_steps} turns and {max_tool_calls} tool calls. When you know the answer, finish with the "
    "template FINAL ANSWER: [YOUR FINAL ANSWER]."
)
QUESTION = "{question}"
ATTACHMENT = "{question}\n\nAttached file: {file_name} (read it with read_file, or open it by this name in python)."
NUDGE = ("No tool call and no FINAL ANSWER found. Call a tool as shown in the instructions, or finish with "
         "FINAL ANSWER: [YOUR FINAL ANSWER].")
INVALID_KINDS = ("malformed_call", "unknown_tool", "call_budget")
STOP_REASONS = ("final_answer", "max_steps", "context_limit")


class ContextLimit(Exception):
    """Raised by a policy when the conversation no longer fits its context: the episode ends (``context_limit``)."""


class Policy(Protocol):
    """Writes the next assistant turn for ``messages`` (``[{role, content}, ...]``, ending with a user message).
    ``task_id``, ``attempt`` and ``step`` let it seed each turn independently of evaluation order."""

    name: str

    def __call__(self, messages: list[dict], *, task_id: str, attempt: int, step: int) -> str:
        ...


@dataclass(frozen=True)
class Budget:
    max_steps: int = 10
    max_tool_calls: int = 8
    invalid_penalty: float = 0.1

    def __post_init__(self):
        if self.max_steps < 1 or self.max_tool_calls < 0 or self.invalid_penalty < 0:
            raise ConfigError(f"budget needs max_steps >= 1, max_tool_calls >= 0, invalid_penalty >= 0; got {self}")


@dataclass(frozen=True)
class Call:
    """One parsed tool call: ``name`` and ``argument``, or ``problem`` (why it is malformed)."""
    name: str | None = None
    argument: str | None = None
    problem: str | None = None


def _call(body: str) -> Call:
    try:
        obj = json.loads(body.strip())
    except json.JSONDecodeError as e:
        return Call(problem=f"the call is not JSON ({e.msg} at column {e.colno})")
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not obj["name"].strip():
        return Call(problem='the call needs a JSON object with a "name" string')
    name, args = obj["name"].strip(), obj.get("arguments", obj.get("parameters"))
    if isinstance(args, str):
        return Call(name, args)
    if isinstance(args, dict) and len(args) == 1 and isinstance(next(iter(args.values())), str):
        return Call(name, next(iter(args.values())))
    want = ARGUMENT_NAMES.get(name, "input")
    return Call(name=name, problem=f'"arguments" must be {{"{want}": "<text>"}} (one string), got {args!r:.60}')


def parse_turn(text: str) -> tuple[list[Call], str]:
    """The tool calls of a turn, in order, and the text outside them (where ``FINAL ANSWER:`` counts). An opened but
    never closed call (generation cut off) is malformed."""
    calls = [_call(m.group(1)) for m in _CALL.finditer(text)]
    outside = _CALL.sub("\n", text)
    if CALL_OPEN in outside:
        calls.append(Call(problem=f"a {CALL_OPEN} was never closed with {CALL_CLOSE}"))
        outside = outside[: outside.index(CALL_OPEN)]
    return calls, outside


def system_prompt(tools: Toolbox, budget: Budget) -> str:
    """The leaderboard's system prompt, then the tool instructions for these tools and budgets."""
    lines = "\n".join(f"- {t.name} ({ARGUMENT_NAMES.get(t.name, 'input')}): {t.description}"
                      for t in tools.tools.values())
    return SYSTEM_PROMPT + "\n\n" + TOOL_INSTRUCTIONS.format(tools=lines, max_steps=budget.max_steps,
                                                             max_tool_calls=budget.max_tool_calls)


def user_prompt(record) -> str:
    if record.file_name:
        return ATTACHMENT.format(question=record.question, file_name=record.file_name)
    return QUESTION.format(question=record.question)


@dataclass
class Episode:
    """One attempt at one task. ``messages``: the whole conversation (holds dataset text: never put it in a
    result file); :meth:`record` is the text-free part that results may hold."""
    task_id: str
    level: int
    attempt: int
    messages: list[dict]
    answer: str | None = None
    correct: bool = False
    format_ok: bool = False
    rule: str = ""
    stop_reason: str = "max_steps"
    steps: int = 0
    tool_calls: int = 0
    failed_tool_calls: int = 0
    invalid: int = 0
    format_errors: int = 0
    unexecuted_calls: int = 0
    errors: Counter = field(default_factory=Counter)
    reward: float = 0.0

    def record(self) -> dict:
        return {"attempt": self.attempt, "correct": self.correct, "format_ok": self.format_ok, "rule": self.rule,
                "stop_reason": self.stop_reason, "steps": self.steps, "tool_calls": self.tool_calls,
                "failed_tool_calls": self.failed_tool_calls, "invalid": self.invalid,
                "format_errors": self.format_errors, "unexecuted_calls": self.unexecuted_calls,
                "errors": dict(sorted(self.errors.items())), "reward": round(self.reward, 6)}


def _reply(call: Call, tools: Toolbox, ep: Episode, budget: Budget) -> ToolResult:
    if call.problem is not None:
        result = error("malformed_call", f"{call.problem}. Write a call as {CALL_OPEN}"
                                         '{"name": "python", "arguments": {"code": "print(1)"}}' + CALL_CLOSE)
    elif ep.tool_calls >= budget.max_tool_calls:
        result = error("call_budget", f"the budget of {budget.max_tool_calls} tool calls is spent; the call was not "
                                      "run. Finish with FINAL ANSWER: [YOUR FINAL ANSWER].")
    else:
        ep.tool_calls += 1
        result = tools.call(call.name, call.argument)
    if result.error:
        ep.errors[result.error] += 1
        if result.error in INVALID_KINDS:
            ep.invalid += 1
        else:
            ep.failed_tool_calls += 1
    return result


def run_episode(record, policy: Policy, tools: Toolbox, budget: Budget = Budget(), *, attempt: int = 0) -> Episode:
    """Run one attempt of ``record`` (a :class:`harness.data.gaia.GaiaRecord` with a truth) and score it."""
    messages = [{"role": "system", "content": system_prompt(tools, budget)},
                {"role": "user", "content": user_prompt(record)}]
    ep = Episode(record.task_id, int(record.level), attempt, messages)
    final_text = None
    for step in range(budget.max_steps):
        try:
            text = policy(messages, task_id=record.task_id, attempt=attempt, step=step)
        except ContextLimit:
            ep.stop_reason = "context_limit"
            break
        if not isinstance(text, str):
            raise TypeError(f"policy {policy.name!r} returned {type(text).__name__}, not the turn's text")
        ep.steps += 1
        messages.append({"role": "assistant", "content": text})
        calls, outside = parse_turn(text)
        if extract_final_answer(outside) is not None:
            final_text, ep.stop_reason, ep.unexecuted_calls = outside, "final_answer", len(calls)
            break
        if not calls:
            ep.format_errors += 1
            ep.invalid += 1
        if step == budget.max_steps - 1:  # no reply that the policy would never read; its calls are not run
            ep.unexecuted_calls = len(calls)
            break
        if not calls:
            messages.append({"role": "user", "content": NUDGE})
            continue
        replies = [_reply(c, tools, ep, budget) for c in calls]
        messages.append({"role": "user", "content": "\n".join(f"<tool_response>\n{r.text.rstrip()}\n</tool_response>"
                                                               for r in replies)})
    scored = score_record(record, final_text)
    ep.answer, ep.correct, ep.format_ok, ep.rule = scored["answer"], scored["correct"], scored["format_ok"], \
        scored["rule"]
    ep.reward = float(ep.correct) - budget.invalid_penalty * ep.invalid
    return ep


class ScriptedPolicy:
    """Replies read from a script, for tests and for checking the pipeline: ``{task_id: [[turn, ...], ...]}``, one
    list of turns per attempt (attempt ``a`` plays list ``a % len``); once a list is used up the policy writes an
    empty turn (a format error). Deterministic, model-free."""

    name = "scripted"

    def __init__(self, script: Mapping[str, Sequence[Sequence[str]]], *, where: str = "script"):
        for task, attempts in script.items():
            if not (isinstance(attempts, list) and attempts and all(
                    isinstance(a, list) and all(isinstance(t, str) for t in a) for a in attempts)):
                raise ConfigError(f"{where}: task {task}: expected a non-empty list of attempts, each a list of "
                                  "strings (the turns)")
        self.script = {k: [list(a) for a in v] for k, v in script.items()}

    @classmethod
    def from_file(cls, path: str | Path) -> ScriptedPolicy:
        path = Path(path)
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"no policy script {path}") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}:{e.lineno}: not JSON ({e.msg})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("tasks"), dict):
            raise ConfigError(f'{path}: expected {{"tasks": {{task_id: [[turn, ...], ...]}}}}')
        return cls(obj["tasks"], where=str(path))

    def __call__(self, messages: list[dict], *, task_id: str, attempt: int, step: int) -> str:
        if task_id not in self.script:
            raise ConfigError(f"the policy script has no task {task_id}; it has {', '.join(sorted(self.script))}")
        turns = self.script[task_id][attempt % len(self.script[task_id])]
        return turns[step] if step < len(turns) else ""


def gaia_toolbox(record, *, search: SearchBackend | None = None, python: PythonTool | None = None,
                 limits: Limits = Limits(), timeout_s: float = 30.0, max_chars: int = 8000) -> Toolbox:
    """The tools of one task, each behind a :class:`~harness.envs.tools.Guarded` limit: ``python`` (the sandbox,
    with the attachment in its working directory; its guard waits 5 s past the sandbox's own wall limit, so the
    sandbox's verdict wins), ``read_file`` (the attachment only) and, with a ``search`` backend, ``web_search``."""
    files = [record.file_path] if record.file_path else []
    py = (python or PythonTool(limits=limits)).with_files(files)
    guards = [Guarded(py, timeout_s=max(timeout_s, py.sandbox.limits.wall_s + 5.0), max_chars=max_chars),
              Guarded(FileReader(files), timeout_s=timeout_s, max_chars=max_chars)]
    if search is not None:
        guards.append(Guarded(WebSearch(search), timeout_s=timeout_s, max_chars=max_chars))
    return Toolbox(guards)


def completion_spans(render: Callable[[list[dict], bool], str], messages: list[dict],
                     n_prompt: int = 2) -> tuple[str, list[tuple[str, bool]]]:
    """The rendered prompt (the first ``n_prompt`` messages and the generation prompt) and the rest of the
    conversation as ``(text, is_policy)`` spans: an assistant message with its template closer is the policy's,
    anything else (tool replies, reminders, the next generation prompt) the environment's, which a trainer masks
    (TRL's ``env_mask`` = 0). ``render(messages, add_generation_prompt)`` is the chat template; it must render
    every conversation as a prefix of its continuations (ChatML does; a template that rewrites earlier turns, such
    as one dropping past reasoning, cannot be split and raises ValueError)."""
    prev = render(messages[:n_prompt], True)
    prompt, spans = prev, []
    for i in range(n_prompt, len(messages)):
        policy = messages[i]["role"] == "assistant"
        nxt = messages[i + 1]["role"] if i + 1 < len(messages) else None
        cur = render(messages[: i + 1], not policy and nxt in (None, "assistant"))
        if not cur.startswith(prev):
            raise ValueError(f"the chat template re-renders earlier turns (message {i}); spans need a template "
                             "whose renderings extend each other")
        spans.append((cur[len(prev):], policy))
        prev = cur
    return prompt, spans
