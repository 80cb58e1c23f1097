"""Tool-integrated question answering as a text game: ARPO's reasoning rollout (and AEPO's, which trains on the
same set with the same tools and reward) behind :class:`harness.envs.base.TextEnv`.

The authors' rollout (``vLLMRolloutWithTools.generate_sequences`` in ``ARPO/verl_arpo_entropy/verl/workers/rollout/
vllm_rollout/vllm_rollout_with_tools.py``, RUC-NLPIR/ARPO read as multi-agent-deep-research/ARPO at ``ff66660``),
and what each piece is here:

* prompt: the row's system message (:data:`SYSTEM_PROMPT`) and the question as the user message, chat-templated
  -> ``reset(id)`` observes the question; the system prompt is the rollout template's (``Template.system``).
* a model segment: generation until EOS or one of the stop strings ``</python>``, ``</search>`` (``stop =
  [f"</{tag}>" for tag in tools]``; the stop string's tokens stay in the sequence) -> one ``step(turn)``, the turn's
  whole text (:data:`STOP_STRINGS`; parser ``whole_turn``).
* a tool call: a segment that stopped on ``</tag>`` -> the first closing tag in the turn names the tool (where the
  authors' generation stops); its content is ``_extract_content(text, tag)`` over the episode's text so far (the
  last ``</tag>``, the last ``<tag>`` before it, stripped; :func:`extract_content`).
* the result: appended inline as `` <result>\\n{output}\\n</result>`` (:data:`RESULT_FORMAT`; masked from the
  loss) and generation continues -> ``Step(observation=<output>, done=False, info={"tool": tag, ...})``; the rollout
  template's turn text must be :data:`RESULT_FORMAT` with ``{observation}``, inline (the env keeps the same text).
* ``call_limit`` (3 in ARPO's ``scripts/config/ppo_trainer.yaml``; 6 in AEPO's) -> ``max_tool_calls``: the call
  past it is not run; the authors append EOS, so the episode ends there and is scored as is (``done=True``;
  the reward sees a call without result: format -1).
* a call whose content is empty (``<python></python>``): counted as a call, not run, and the authors' loop drops the
  trajectory from the active set: it ends there -> ``done=True``, scored (format -1).
* a segment that ended on EOS (no stop string) -> the final answer: ``done=True``, ``info["reward"]`` =
  :func:`harness.verify.arpo_reward.score` of the WHOLE response -- every turn and every inlined result, as verl's
  naive reward manager decodes it (``skip_special_tokens=True``) -- against ``reward_model.ground_truth``;
  ``won`` = the answer's F1 is 1 (the score itself is 1.1 with the multi-tool bonus).

The tools, through the harness's (:mod:`harness.envs.tools`), each behind :class:`~harness.envs.tools.Guarded`
(wall timeout, output cap; an error is the observation text, never an exception):

* ``python``: the authors' ``PythonTool`` runs ``python -c code`` after rewriting a last bare expression into
  ``print(expr)`` (``_preprocess_code``, ported: :func:`auto_print`) and returns stdout stripped on success, stderr
  stripped on failure, ``Tool(python) returned empty output.`` when that is empty (after 3 retries; AEPO: 4).
  Here: the same rewrite, then the sandboxed :class:`~harness.envs.tools.PythonTool`
  (:class:`~harness.envs.tools.Limits`); success: the output stripped (stdout and stderr merged, the sandbox's only
  stream); empty: the authors' text; failure: the harness's error text (``ERROR (<kind>): ...`` with the merged output).
* ``search``: the authors' ``BingSearchTool`` (Brightdata, cached) answers ``Page i: <snippet>`` lines (10 results,
  1000 characters each), ``No search results found.`` without hits, and ``Tool(search) returned empty output.`` on
  failure; its query has ``"`` removed. Here: :class:`ArpoSearch` formats any
  :class:`~harness.envs.tools.SearchBackend`'s hits the same way (snippets only); a backend error is the harness's
  ``ERROR (backend_error): ...`` text. Without a backend a search call is answered with an error text.

Deviations: tool texts on failure are the harness's, not the authors' (their timeout is 120 s, here
``Limits.wall_s``; their stderr-only traceback is here the merged output); no retries (the authors retry an empty or
failing call 3 times: the sandbox is deterministic, the search backend the user's); the episode's text for content
extraction and scoring starts at the first turn, so a closing tag with no opening tag anywhere in the episode is
answered with an error text (valid=False) where the authors' ``rindex`` would reach back into the prompt (the system
prompt's own ``<python> python code here </python>`` example) and run that span. The response-length budget (4096
tokens in both released runs: ``max_response_length``) is the rollout's (``max_episode_tokens``, which counts the
prompt too); the authors' per-segment ``max_tokens`` is the remaining budget, and so is ours: the template continues a
turn cut by ``max_new_tokens_per_turn`` (``Template.continue_cut``) until it stops or the budget is spent, where it
is cut and read here as the final answer (the authors score the truncated response alike). Every step's ``info["reward"]`` is the authors' score of the response so far (the rollout keeps the
last one given), so an episode cut by the budget or ``max_turns`` before a final answer is scored as the authors
score a truncated response (:meth:`ToolQAEnv.score_trajectory`; almost always the format's -1).
"""
from __future__ import annotations

import ast
import hashlib
import json
from dataclasses import asdict

from harness.config import ConfigError
from harness.envs.base import Step
from harness.envs.tools import Guarded, Limits, PythonTool, SearchBackend, Toolbox, ToolResult, error
from harness.verify import arpo_reward

#: The system message of every row of ARPO/rl_datasets/train_10k.parquet (all 10,000) and valid.parquet (all 180)
#: at ff66660 (column ``prompt``, message 0), byte for byte. The two ``\x08oxed`` are literal backspace characters
#: (U+0008) where ``\boxed`` was meant (presumably "\boxed" in a non-raw Python string of a data script that is not
#: in the repository); the released runs trained on these bytes. The same text with ``\\boxed`` intact is the
#: system turn of deep_research.py's ``__main__`` example (ARPO/verl_arpo_entropy/verl/utils/reward_score/
#: deep_research.py, line 356). verl renders it with the tokenizer's chat template as the system message, the
#: question as the user message (verl/utils/dataset/rl_dataset.py, ``apply_chat_template(messages,
#: add_generation_prompt=True)``).
SYSTEM_PROMPT = (
    "You are a helpful assistant that can solve the given question step by step with the help of the wikipedia "
    "search tool and python interpreter tool. Given a question, you need to first think about the reasoning process "
    "in the mind and then provide the answer. During thinking, you can invoke the wikipedia search tool to search "
    "and python interpreter tool to calculate the math problem for fact information about specific topics if "
    "needed. The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags "
    "respectively, and the search query and result are enclosed within <search> </search> and <result> </result> "
    "tags respectively. For example, <think> This is the reasoning process. </think> <search> search query here "
    "</search> <result> search result here </result> <think> This is the reasoning process. </think> <python> "
    "python code here </python> <result> python interpreter result here </result> <think> This is the reasoning "
    "process. </think> <answer> The final answer is \\[ \x08oxed{answer here} \\] </answer>. In the last part of "
    "the answer, the final exact answer is enclosed within \x08oxed{} with latex format."
)
#: sha256 of SYSTEM_PROMPT (UTF-8): the same digest as the system message of every row of both files at ff66660
SYSTEM_PROMPT_SHA256 = "d49b2184790dbcef20cd2037bfa40262d3182ecea3d16abdb429862c06c50b34"


def rows_digest(rows: list[dict]) -> str:
    """sha256 of the rows (canonical JSON, in order): what a run's protocol records for the data it used."""
    text = json.dumps(rows, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


TOOL_TAGS = ("python", "search")
#: where a model turn stops besides EOS (the authors' ``stop_sequences``)
STOP_STRINGS = tuple(f"</{t}>" for t in TOOL_TAGS)
#: how a tool's output is inlined after the call (``formatted_result`` in the authors' rollout)
RESULT_FORMAT = " <result>\n{output}\n</result>"
#: the authors' text for a call whose tool returned nothing
EMPTY_OUTPUT = "Tool({tag}) returned empty output."
#: ARPO's ``rollout.tools.call_limit`` (scripts/config/ppo_trainer.yaml; AEPO's config has 6)
ARPO_CALL_LIMIT = 3
AEPO_CALL_LIMIT = 6
#: the authors' Bing tool: results kept and characters per snippet (``max_results``, ``result_length``)
SEARCH_RESULTS, SNIPPET_CHARS = 10, 1000
__all__ = ["AEPO_CALL_LIMIT", "ARPO_CALL_LIMIT", "RESULT_FORMAT", "STOP_STRINGS", "SYSTEM_PROMPT", "ArpoSearch",
           "ToolQAEnv", "auto_print", "extract_content", "first_call_tag"]


def auto_print(code: str) -> str:
    """The authors' ``PythonTool._preprocess_code``: a last statement that is a bare expression other than a
    ``print(...)`` call becomes ``print(<expr>)`` (the code is re-rendered by ``ast.unparse`` then); code that does
    not parse, or needs no change, is returned as it is."""
    try:
        tree = ast.parse(code)
        if tree.body:
            last = tree.body[-1]
            if isinstance(last, ast.Expr) and not (isinstance(last.value, ast.Call)
                                                   and isinstance(last.value.func, ast.Name)
                                                   and last.value.func.id == "print"):
                tree.body[-1] = ast.Expr(value=ast.Call(func=ast.Name(id="print", ctx=ast.Load()),
                                                        args=[last.value], keywords=[]))
                code = ast.unparse(tree)
    except Exception:  # noqa: BLE001 -- the authors' bare except: keep the code unchanged
        pass
    return code


def extract_content(text: str, tag: str) -> str:
    """The authors' ``_extract_content``: the content of the last ``<tag>...</tag>`` of ``text`` (the last closing
    tag, the last opening tag before it), stripped; "" when there is none."""
    try:
        end = text.rindex(f"</{tag}>")
        start = text.rindex(f"<{tag}>", 0, end)
    except ValueError:
        return ""
    return text[start + len(tag) + 2: end].strip()


def first_call_tag(turn: str) -> str | None:
    """The tool whose closing tag comes first in ``turn`` (where the authors' generation stops), or None."""
    hits = [(turn.find(f"</{t}>"), t) for t in TOOL_TAGS if f"</{t}>" in turn]
    return min(hits)[1] if hits else None


class ArpoSearch:
    """The ``search`` tool over any :class:`SearchBackend`, answering as the authors' Bing tool does: ``Page i:
    <snippet>`` lines (at most ``k`` hits, snippets cut to ``snippet_chars``), ``No search results found.``
    without hits; the query has ``"`` removed first."""

    name = "search"
    description = "searches for a query and returns the best snippets, one 'Page i: ...' line each."

    def __init__(self, backend: SearchBackend, *, k: int = SEARCH_RESULTS, snippet_chars: int = SNIPPET_CHARS):
        if not isinstance(backend, SearchBackend):
            raise TypeError(f"backend must have search(query, k); got {type(backend).__name__}")
        self.backend, self.k, self.snippet_chars = backend, k, snippet_chars

    def __call__(self, query: str) -> ToolResult:
        query = query.replace('"', "")
        if not query.strip():
            return error("bad_input", "search needs a non-empty query")
        try:
            hits = list(self.backend.search(query, self.k))[: self.k]
        except Exception as e:  # whatever a user's backend raises: the agent sees it, the episode goes on
            return error("backend_error", f"search failed: {type(e).__name__}: {e}"[:500])
        snippets = [h.snippet.strip() for h in hits if h.snippet.strip()]
        if not snippets:
            return ToolResult("No search results found.", None, {"hits": 0})
        return ToolResult("\n".join(f"Page {i}: {s[: self.snippet_chars]}" for i, s in enumerate(snippets, 1)),
                          None, {"hits": len(snippets)})


def _backend_protocol(backend) -> dict | None:
    if backend is None:
        return None
    out = {"backend": getattr(backend, "name", None) or type(backend).__name__}
    if hasattr(backend, "protocol"):
        out["protocol"] = backend.protocol()
    docs = getattr(backend, "docs", None)  # LocalCorpusSearch: (relative path, text, counts) per document
    if isinstance(docs, list) and all(isinstance(d, tuple) and len(d) >= 2 for d in docs):
        h = hashlib.sha256()
        for d in docs:
            h.update(json.dumps([d[0], d[1]], ensure_ascii=False).encode("utf-8"))
        out["corpus_sha256"], out["corpus_docs"] = h.hexdigest(), len(docs)
    return out


class ToolQAEnv:
    """ARPO's tool-integrated QA over rows of :func:`harness.data.arpo_reasoning.load` (module docstring).

    ``rows``: dicts with ``id``, ``question``, ``answer`` (the ground truth) and ``source`` (the task type); ``search``:
    a :class:`SearchBackend` (None: search calls are answered with an error text); ``limits``: the python sandbox's;
    ``python``: a ready :class:`PythonTool` instead (its sandbox's limits apply); ``max_tool_calls``: the authors'
    ``call_limit``; ``timeout_s`` / ``max_chars``: the guard around each tool (python's waits 5 s past the
    sandbox's wall limit, so the sandbox's verdict wins); ``auto_print``: the authors' last-expression rewrite;
    ``split``: the name of the set the rows come from (the protocol names it)."""

    def __init__(self, rows: list[dict], *, search: SearchBackend | None = None, limits: Limits = Limits(),
                 python: PythonTool | None = None, max_tool_calls: int = ARPO_CALL_LIMIT, timeout_s: float = 30.0,
                 max_chars: int = 8000, auto_print: bool = True, split: str | None = None):
        if isinstance(max_tool_calls, bool) or not isinstance(max_tool_calls, int) or max_tool_calls < 0:
            raise ConfigError(f"max_tool_calls must be an integer >= 0, got {max_tool_calls!r}")
        self._rows: dict[str, dict] = {}
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise ConfigError(f"row {i}: expected a dict with id, question, answer, source, got "
                                  f"{type(row).__name__}")
            missing = [k for k in ("id", "question", "answer", "source") if k not in row]
            if missing:
                raise ConfigError(f"row {i}: missing {', '.join(missing)} (rows come from "
                                  "harness.data.arpo_reasoning.load)")
            if row["id"] in self._rows:
                raise ConfigError(f"row {i}: duplicate id {row['id']!r}")
            self._rows[row["id"]] = row
        if not self._rows:
            raise ConfigError("ToolQAEnv needs at least one row")
        self._ids = list(self._rows)
        self.split = split
        self.max_tool_calls, self.auto_print = max_tool_calls, auto_print
        self.timeout_s, self.max_chars = float(timeout_s), int(max_chars)
        py = python if python is not None else PythonTool(limits=limits)
        self.limits = py.sandbox.limits
        self.python_guard_s = max(self.timeout_s, self.limits.wall_s + 5.0)
        tools = [Guarded(py, timeout_s=self.python_guard_s, max_chars=self.max_chars)]
        self.search = search
        if search is not None:
            tools.append(Guarded(ArpoSearch(search), timeout_s=self.timeout_s, max_chars=self.max_chars))
        self.tools = Toolbox(tools)
        self.task, self.task_type = "", ""
        self._row: dict | None = None
        self._parts: list[str] = []
        self._steps = self._calls = 0
        self._done = True

    # -- TextEnv ------------------------------------------------------------------------------------------------

    def game_ids(self) -> list[str]:
        return list(self._ids)

    def reset(self, game_id: str) -> Step:
        if game_id not in self._rows:
            raise KeyError(f"unknown question id {game_id!r}; valid: {', '.join(self._ids[:3])}, ... "
                           f"({len(self._ids)} ids)")
        self._row = self._rows[game_id]
        self.task, self.task_type = self._row["question"], self._row["source"]
        self._parts, self._steps, self._calls, self._done = [], 0, 0, False
        return Step(self._row["question"], (), steps=0)

    def step(self, action: str) -> Step:
        if self._row is None or self._done:
            raise RuntimeError("the episode is over (or never started): call reset(game_id) first")
        turn = action if isinstance(action, str) else str(action)
        self._steps += 1
        self._parts.append(turn)
        tag = first_call_tag(turn)
        if tag is None:
            return self._finish("", {"end": "answer"})
        if self._calls >= self.max_tool_calls:
            return self._finish(f"tool call limit ({self.max_tool_calls}) reached; the episode ends",
                                {"end": "call_limit", "tool": tag})
        self._calls += 1
        text = self.trajectory
        if f"<{tag}>" not in text[: text.rindex(f"</{tag}>")]:
            return self._reply(tag, error("bad_input", f"</{tag}> without <{tag}>: write <{tag}> ... </{tag}>"),
                               valid=False)
        content = extract_content(text, tag)
        if not content:
            return self._finish(f"empty <{tag}> call; the episode ends", {"end": "empty_call", "tool": tag})
        if tag == "python":
            result = self.tools.call("python", auto_print(content) if self.auto_print else content)
            if result.ok and result.text == "(no output)" and result.info.get("output_bytes") != len("(no output)"):
                result = ToolResult("", None, result.info)
        elif self.search is None:
            result = error("backend_error", "search is not available here: this environment has no search backend")
        else:
            result = self.tools.call("search", content)
        return self._reply(tag, result, valid=True)

    def close(self) -> None:
        self._row, self._done = None, True

    # -- the rest -------------------------------------------------------------------------------------------------

    @property
    def trajectory(self) -> str:
        """The response so far as the authors' reward reads it: the turns with their inlined results."""
        return "".join(self._parts)

    def score_trajectory(self) -> dict:
        """The authors' verdict (:func:`harness.verify.arpo_reward.compute_score`) on the response so far: for a
        rollout that cuts an episode before its final answer (the response budget), as the authors score it."""
        if self._row is None:
            raise RuntimeError("no episode: call reset(game_id) first")
        return arpo_reward.compute_score(self.trajectory, self._row["answer"])

    def _reply(self, tag: str, result: ToolResult, *, valid: bool) -> Step:
        output = result.text.strip() or EMPTY_OUTPUT.format(tag=tag)
        self._parts.append(RESULT_FORMAT.format(output=output))
        return Step(output, (), valid=valid, steps=self._steps,
                    info={"tool": tag, "calls": self._calls, "error": result.error,
                          "reward": float(self.score_trajectory()["score"])})

    def _finish(self, observation: str, info: dict) -> Step:
        self._done = True
        verdict = self.score_trajectory()
        won = verdict["f1_score"] == 1.0
        return Step(observation, (), won=won, done=True, steps=self._steps,
                    info={**info, "reward": float(verdict["score"]), "f1": float(verdict["f1_score"]),
                          "format_ok": verdict["score"] >= 0,  # -1 is the authors' only format verdict
                          "calls": self._calls})

    def protocol(self) -> dict:
        """What fixes the outcomes besides the policy: the rows (digest), the tools and their limits, the reward."""
        rows = [self._rows[i] for i in self._ids]
        return {"env": "toolqa", "format": "arpo-v1", "split": self.split, "n_rows": len(rows),
                "rows_sha256": rows_digest(rows),
                "system_prompt_sha256": hashlib.sha256(SYSTEM_PROMPT.encode()).hexdigest(),
                "max_tool_calls": self.max_tool_calls, "stops": list(STOP_STRINGS), "result_format": RESULT_FORMAT,
                "python": {"limits": asdict(self.limits), "guard_timeout_s": self.python_guard_s,
                           "max_chars": self.max_chars, "auto_print": self.auto_print},
                "search": None if self.search is None else {
                    **_backend_protocol(self.search), "k": SEARCH_RESULTS, "snippet_chars": SNIPPET_CHARS,
                    "guard_timeout_s": self.timeout_s, "max_chars": self.max_chars},
                "reward": {"name": arpo_reward.NAME, "file": arpo_reward.SOURCE["file"],
                           "commit": arpo_reward.SOURCE["commit"], "blob": arpo_reward.SOURCE["blob"],
                           "won": "f1 == 1"}}
