"""Audit: how often does our verifier disagree with lm-eval's built-in Minerva-style scoring?

Same responses, two scorers:

* ours -- ``harness.verify.Verifier`` (last ``\\boxed{}`` or final-answer statement, math-verify + sympy,
  fail-closed);
* lm-eval -- ``lm_eval.tasks.minerva_math.utils``: the answer of "Final Answer: The final answer is X. I hope it
  is correct." (``get_unnormalized_answer``), falling back to the last ``\\boxed{}`` (``last_boxed_only_string`` /
  ``remove_boxed``, as lm-eval's MATH tasks extract it), then ``normalize_final_answer`` on both sides and
  ``is_equiv`` (sympy ``parse_latex`` + ``simplify``). ``lmeval_strict`` is lm-eval's ``minerva_math``
  ``exact_match`` exactly (the statement only, no box fallback).

Responses (default): built from each MATH500 problem's reference solution, with an expected label --

  reference        the reference solution (ends in its \\boxed{answer})                          -> correct
  statement        "... Final Answer: The final answer is $answer$. I hope it is correct."      -> correct
  equiv:<rule>     the reference with its boxed answer rewritten in an equivalent form          -> correct
  wrong            the reference with the boxed answer perturbed (first integer + 1, or +1)     -> incorrect
  truncated        the reference cut just before its last \\boxed{} (no committed answer)        -> incorrect

or real responses with ``--responses FILE`` (the ``--samples-out`` JSONL of ``harness eval``: one line per
problem with ``gold`` and ``responses``; no expected label).

Prints the disagreement rate overall and per kind, each scorer's agreement with the expected labels, and example
disagreements; writes the full report (JSON) to ``--out``. Data are read in place from the data directory.

    python benchmarks/audit_verifier.py --out audit.json [--data-dir DIR] [--limit N] [--workers 2]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import sys
import time
from collections import defaultdict
from decimal import Decimal

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

from harness.results import atomic_write_json, provenance  # noqa: E402
from harness.verify import Verifier, _match_brace, verifier_config  # noqa: E402


# ---------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------

def _last_box_span(text: str):
    pos = text.rfind("\\boxed")
    if pos < 0:
        return None
    brace = text.find("{", pos)
    if brace < 0:
        return None
    end = _match_brace(text, brace)
    return None if end is None else (pos, brace, end)


def _replace_box(solution: str, new_answer: str) -> str | None:
    span = _last_box_span(solution)
    if span is None:
        return None
    pos, brace, end = span
    return solution[: brace + 1] + new_answer + solution[end:]


def _perturb(answer: str) -> str:
    m = re.search(r"\d+", answer)
    if m is None:
        return answer + "+1"
    return answer[: m.start()] + str(int(m.group(0)) + 1) + answer[m.end():]


_FRAC_RE = re.compile(r"^(-?)\\[dt]?frac\{(\d+)\}\{(\d+)\}$")
_INT_RE = re.compile(r"^-?\d+$")
_SQRT_RE = re.compile(r"^(\d*)\\sqrt\{(\d+)\}$")


def equivalent_forms(answer: str) -> list[tuple[str, str]]:
    """(rule, rewritten answer) pairs mathematically equal to ``answer`` (only rules that apply)."""
    a = answer.strip()
    out = []
    m = _FRAC_RE.match(a)
    if m:
        sign, p, q = m.groups()
        out.append(("slash_fraction", f"{sign}{p}/{q}"))
        out.append(("dfrac", f"{sign}\\dfrac{{{p}}}{{{q}}}"))
        qq = int(q)
        while qq % 2 == 0:
            qq //= 2
        while qq % 5 == 0:
            qq //= 5
        if qq == 1 and int(q) != 0:  # terminating decimal, written exactly
            out.append(("decimal", f"{sign}{Decimal(int(p)) / Decimal(int(q))}"))
    if _INT_RE.match(a):
        n = int(a)
        out.append(("trailing_zero", f"{n}.0"))
        out.append(("equation", f"x = {n}"))
        if abs(n) >= 1000:
            out.append(("thousands_comma", f"{n:,}"))
        if 0 <= n < 100:
            out.append(("leading_zeros", f"{n:03d}" if n >= 10 else f"00{n}"))
    m = _SQRT_RE.match(a)
    if m:
        coef, rad = m.groups()
        mul = " \\cdot " if coef else ""
        out.append(("power_half", coef + mul + rad + "^{\\frac{1}{2}}"))
    if "\\left" in a or "\\right" in a:
        out.append(("no_left_right", a.replace("\\left", "").replace("\\right", "")))
    if a.startswith("\\text{") and a.endswith("}"):
        out.append(("plain_text", a[len("\\text{"):-1]))
    return out


def math500_cases(data_dir: str, limit: int | None) -> list[dict]:
    from harness.data.realdata import data_file

    path = data_file(data_dir, "math500")
    rows = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
    rows = rows[:limit] if limit else rows
    cases = []
    for r in rows:
        pid, gold, sol = r["unique_id"], r["answer"], r["solution"]

        def add(kind, response, expected):
            if response is not None:
                cases.append({"id": f"{pid}#{kind}", "problem": pid, "kind": kind, "gold": gold,
                              "response": response, "expected": expected})

        add("reference", sol, True)
        add("statement", sol.rstrip() + f"\nFinal Answer: The final answer is ${gold}$. I hope it is correct.", True)
        for rule, form in equivalent_forms(gold):
            add(f"equiv:{rule}", _replace_box(sol, form), True)
        add("wrong", _replace_box(sol, _perturb(gold)), False)
        span = _last_box_span(sol)
        if span is not None:
            add("truncated", sol[: span[0]].rstrip(), False)
    return cases


def response_cases(path: str) -> list[dict]:
    cases = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            rec = json.loads(line)
            for j, resp in enumerate(rec["responses"]):
                cases.append({"id": f"{rec.get('benchmark', '')}/{rec['id']}#{j}", "problem": rec["id"],
                              "kind": f"model:{rec.get('benchmark', '')}", "gold": rec["gold"], "response": resp,
                              "expected": None})
    return cases


# ---------------------------------------------------------------------------
# lm-eval's scoring
# ---------------------------------------------------------------------------

_LMEVAL = {}


def lmeval_utils():
    """``lm_eval.tasks.minerva_math.utils``, importable even where antlr4-python3-runtime is not 4.11.

    That module asserts antlr4 4.11 at import and its ``is_equiv`` parses with ``sympy.parse_latex``, which
    refuses any other antlr4 runtime. Where the installed runtime differs, the import check is bypassed and
    ``parse_latex`` is replaced by ``latex2sympy2_extended.latex2sympy`` (the same ANTLR LaTeX grammar, built for
    the installed runtime); the report says which parser was used (``lmeval_parser``).
    """
    if "mu" in _LMEVAL:
        return _LMEVAL["mu"]
    import importlib.metadata as md

    real_version = md.version
    antlr = real_version("antlr4-python3-runtime")
    parser = "sympy.parse_latex"
    if not antlr.startswith("4.11"):
        md.version = lambda name: "4.11.0" if name == "antlr4-python3-runtime" else real_version(name)
    try:
        from lm_eval.tasks.minerva_math import utils as mu
    finally:
        md.version = real_version
    try:
        mu.parse_latex("1")
    except ImportError:
        from latex2sympy2_extended import latex2sympy

        mu.parse_latex = latex2sympy
        parser = f"latex2sympy2_extended.latex2sympy (antlr4-python3-runtime {antlr} installed; sympy.parse_latex " \
                 "needs 4.11)"
    _LMEVAL.update(mu=mu, parser=parser)
    return mu


def lmeval_score(response: str, gold: str) -> dict:
    # ANTLR prints a runtime/generated-code version notice (to stdout) on every parser it builds: keep it out
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return _lmeval_score(response, gold)


def _lmeval_score(response: str, gold: str) -> dict:
    mu = lmeval_utils()

    strict_raw = mu.get_unnormalized_answer(response)
    raw = None if strict_raw == "[invalidanswer]" else strict_raw
    source = "statement" if raw is not None else None
    if raw is None:
        boxed = mu.last_boxed_only_string(response)
        if boxed is not None:
            try:
                raw = mu.remove_boxed(boxed)
                source = "boxed"
            except (AssertionError, IndexError):
                raw = None
    gold_norm = mu.normalize_final_answer(gold)
    strict = bool(mu.is_equiv(mu.normalize_final_answer(strict_raw), gold_norm)) if strict_raw != "[invalidanswer]" \
        else False
    if raw is None:
        return {"correct": False, "strict": strict, "extracted": None, "source": None}
    pred_norm = mu.normalize_final_answer(raw)
    return {"correct": bool(mu.is_equiv(pred_norm, gold_norm)), "strict": strict, "extracted": pred_norm,
            "source": source}


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

def _tail(s: str, n: int = 160) -> str:
    s = s.replace("\n", " ")
    return s if len(s) <= n else "..." + s[-n:]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="JSON report path")
    p.add_argument("--data-dir", default=os.environ.get("RLVR_DATA_DIR") or os.path.join(REPO_ROOT, "..", "shared",
                                                                                            "data"))
    p.add_argument("--limit", type=int, default=None, help="first N MATH500 problems (default all 500)")
    p.add_argument("--responses", default=None, help="audit these responses instead (harness eval --samples-out)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--timeout", type=float, default=5.0)
    p.add_argument("--examples", type=int, default=5, help="example disagreements printed per kind")
    a = p.parse_args(argv)

    cases = response_cases(a.responses) if a.responses else math500_cases(a.data_dir, a.limit)
    t0 = time.time()
    with Verifier(workers=a.workers, timeout=a.timeout) as v:
        ours = v.verify_many([{"id": c["id"], "gold": c["gold"], "pred": c["response"]} for c in cases])
    t_ours = time.time() - t0
    t0 = time.time()
    theirs = [lmeval_score(c["response"], c["gold"]) for c in cases]
    t_lm = time.time() - t0

    by_kind = defaultdict(lambda: {"n": 0, "disagree": 0, "disagree_strict": 0, "ours_correct": 0,
                                   "lmeval_correct": 0, "lmeval_strict_correct": 0, "ours_matches_expected": 0,
                                   "lmeval_matches_expected": 0, "ours_gold_error": 0})
    examples = defaultdict(list)
    records = []
    for c, o, t in zip(cases, ours, theirs):
        k = by_kind[c["kind"]]
        k["n"] += 1
        k["ours_correct"] += o.correct
        k["lmeval_correct"] += t["correct"]
        k["lmeval_strict_correct"] += t["strict"]
        k["ours_gold_error"] += o.status == "gold_error"
        k["disagree"] += o.correct != t["correct"]
        k["disagree_strict"] += o.correct != t["strict"]
        if c["expected"] is not None:
            k["ours_matches_expected"] += o.correct == c["expected"]
            k["lmeval_matches_expected"] += t["correct"] == c["expected"]
        rec = {"id": c["id"], "kind": c["kind"], "gold": c["gold"], "expected": c["expected"],
               "ours": {"correct": o.correct, "status": o.status, "extracted": o.extracted},
               "lmeval": t}
        if o.correct != t["correct"]:
            rec["response_tail"] = _tail(c["response"])
            examples[c["kind"]].append(rec)
        records.append(rec)

    n = len(cases)
    tot = lambda key: sum(k[key] for k in by_kind.values())  # noqa: E731
    labelled = sum(k["n"] for kind, k in by_kind.items() if not kind.startswith("model:"))
    summary = {
        "n_cases": n, "n_problems": len({c["problem"] for c in cases}),
        "disagreement_rate": tot("disagree") / n if n else None,
        "disagreement_rate_vs_strict": tot("disagree_strict") / n if n else None,
        "ours_accuracy_vs_expected": tot("ours_matches_expected") / labelled if labelled else None,
        "lmeval_accuracy_vs_expected": tot("lmeval_matches_expected") / labelled if labelled else None,
        "seconds_ours": t_ours, "seconds_lmeval": t_lm,
    }
    kinds = {}
    for kind, k in sorted(by_kind.items()):
        kinds[kind] = {**k, "disagreement_rate": k["disagree"] / k["n"],
                       "ours_rate": k["ours_correct"] / k["n"], "lmeval_rate": k["lmeval_correct"] / k["n"]}
    report = {"kind": "verifier_audit", "summary": summary, "by_kind": kinds,
              "disagreements": {kind: ex for kind, ex in examples.items()},
              "verifier": verifier_config(timeout=a.timeout),
              "lmeval_scorer": "lm_eval.tasks.minerva_math.utils: get_unnormalized_answer, else last_boxed_only_string"
                               "+remove_boxed; normalize_final_answer; is_equiv",
              "lmeval_parser": _LMEVAL.get("parser"),
              "source": a.responses or f"{a.data_dir}/math500/test.jsonl", "provenance": provenance()}
    atomic_write_json(a.out, report)

    print(f"{n} responses ({summary['n_problems']} problems); ours {t_ours:.1f}s, lm-eval {t_lm:.1f}s")
    print(f"lm-eval LaTeX parser: {_LMEVAL.get('parser')}")
    print(f"disagreement rate (ours vs lm-eval minerva + boxed fallback): {summary['disagreement_rate']:.2%}")
    print(f"disagreement rate (ours vs lm-eval minerva exact_match, statement only): "
          f"{summary['disagreement_rate_vs_strict']:.2%}")
    if labelled:
        print(f"agreement with the expected label: ours {summary['ours_accuracy_vs_expected']:.2%}, "
              f"lm-eval {summary['lmeval_accuracy_vs_expected']:.2%}")
    print(f"{'kind':<24}{'n':>6}{'ours':>8}{'lm-eval':>9}{'disagree':>10}")
    for kind, k in kinds.items():
        print(f"{kind:<24}{k['n']:>6}{k['ours_rate']:>8.2%}{k['lmeval_rate']:>9.2%}{k['disagreement_rate']:>10.2%}")
    for kind, ex in sorted(examples.items()):
        print(f"\n-- {kind}: {len(ex)} disagreement(s), first {min(a.examples, len(ex))}")
        for e in ex[: a.examples]:
            print(f"  {e['id']}: gold {e['gold']!r}; ours {e['ours']['correct']} ({e['ours']['status']}, "
                  f"{e['ours']['extracted']!r}); lm-eval {e['lmeval']['correct']} ({e['lmeval']['extracted']!r})")
    print(f"\nwrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
