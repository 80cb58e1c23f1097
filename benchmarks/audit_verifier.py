"""Audit: how often does our verifier disagree with lm-eval's built-in Minerva-style scoring?

Same responses, two scorers:

* ours -- ``harness.verify.Verifier`` (last ``\\boxed{}`` or final-answer statement, math-verify + sympy,
  fail-closed);
* lm-eval -- ``lm_eval.tasks.minerva_math.utils``: the answer of "Final Answer: The final answer is X. I hope it
  is correct." (``get_unnormalized_answer``), falling back to the last ``\\boxed{}`` (``last_boxed_only_string`` /
  ``remove_boxed``, as lm-eval's MATH tasks extract it), then ``normalize_final_answer`` on both sides and
  ``is_equiv`` (sympy ``parse_latex`` + ``simplify``). ``lmeval_strict`` is lm-eval's ``minerva_math``
  ``exact_match`` exactly (the statement only, no box fallback).

Responses (default): built from each reference solution of MATH500 and/or Minerva-Math (``--benchmark``), with an
expected label --

  reference        the reference solution (ends in its \\boxed{answer})                          -> correct
  statement        "... Final Answer: The final answer is $answer$. I hope it is correct."      -> correct
  equiv:<rule>     the reference with its boxed answer rewritten in an equivalent form          -> correct
                   (fractions, decimals, thousands, \\left/\\right, ...; and the physical-science
                   forms of issue 18: e-notation <-> \\times 10^{}, shifted mantissa, the solution's
                   own unit after the number, LaTeX spacing, \\mathbf, \\pm written out)
  wrong            the reference with the boxed answer perturbed (first integer + 1, or +1)     -> incorrect
  wrong:exponent   scientific-notation answers with the exponent + 1                            -> incorrect
  truncated        the reference cut just before its last \\boxed{} (no committed answer)        -> incorrect

Minerva golds are what the benchmark loader scores against (the last \\boxed{} of the solution through
``normalize_answer``); lm-eval gets its own gold, the raw box content (``process_docs`` normalises it).
``--baseline DIR`` also scores every case with another version of the verifier (``DIR/harness/verify``, see
``benchmarks/bench_verify.py``) so the figures before and after a change come from one run.

or real responses with ``--responses FILE`` (the ``--samples-out`` JSONL of ``harness eval``: one line per
problem with ``gold`` and ``responses``; no expected label).

Prints the disagreement rate overall and per kind, each scorer's agreement with the expected labels, and example
disagreements; writes the full report (JSON) to ``--out``. Data are read in place from the data directory.

    python benchmarks/audit_verifier.py --out audit.json [--benchmark math500|minerva_math|both] [--data-dir DIR]
                                        [--limit N] [--workers 2] [--baseline DIR]
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
from harness.verify import (  # noqa: E402
    _match_brace,
    extract_answer,
    normalize_answer,
    verifier_config,
)


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


_ENOT_RE = re.compile(r"^(-?\d+(?:\.\d+)?)[eE]([+-]?\d+)$")
_TIMES10_RE = re.compile(r"^(-?\d+(?:\.\d+)?)\s*\\times\s*10\^\{(-?\d+)\}$")
_DECIMAL_RE = re.compile(r"^-?\d+(?:\.\d+)?$")
_UNIT_AFTER_BOX_RE = re.compile(r"^\s*((?:\\(?:mathrm|text)\s*\{[^{}$]*\}(?:\s*\^\s*\{?-?\d+\}?)?\s*)+)")


def _sci(mant: str, exp: int) -> tuple[str, str]:
    """(shifted mantissa, exponent) of the same number: 4.5e33 -> ("0.45", 34)."""
    return str(Decimal(mant).scaleb(-1).normalize()), exp + 1


def physics_forms(answer: str, unit: str | None = None) -> list[tuple[str, str]]:
    """Equivalent forms of the issue-18 classes: e-notation <-> \\times 10^{}, a shifted mantissa, the solution's
    unit after a number, LaTeX spacing, \\mathbf around a number, \\pm written out."""
    a = answer.strip()
    out = []
    m = _ENOT_RE.match(a) or _TIMES10_RE.match(a)
    if m:
        mant, exp = m.group(1), int(m.group(2))
        if _ENOT_RE.match(a):
            out.append(("sci_times", f"{mant} \\times 10^{{{exp}}}"))
        else:
            out.append(("e_notation", f"{mant}e{exp}"))
        shifted, exp2 = _sci(mant, exp)
        out.append(("sci_shifted", f"{shifted} \\times 10^{{{exp2}}}"))
    if unit and (m or _DECIMAL_RE.match(a)):
        out.append(("unit", f"{a}~{unit.strip()}"))
    if m or _DECIMAL_RE.match(a) or a.startswith(("\\frac", "\\sqrt", "-\\frac")):
        out.append(("spacing", f"\\ {a}\\ "))
        if not re.search(r"[A-Za-z]", re.sub(r"\\[A-Za-z]+", "", a)):
            out.append(("bold", f"\\mathbf{{{a}}}"))
    if "\\pm" in a:
        from harness.verify.normalize import _expand_pm

        expanded = _expand_pm(a)
        if expanded is not None:
            out.append(("pm_written_out", expanded))
    return out


def wrong_exponent(answer: str) -> str | None:
    m = _ENOT_RE.match(answer.strip()) or _TIMES10_RE.match(answer.strip())
    return None if m is None else f"{m.group(1)} \\times 10^{{{int(m.group(2)) + 1}}}"


def equivalent_forms(answer: str, unit: str | None = None) -> list[tuple[str, str]]:
    """(rule, rewritten answer) pairs mathematically equal to ``answer`` (only rules that apply)."""
    a = answer.strip()
    out = physics_forms(a, unit)
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
        wrong_exp = wrong_exponent(gold)
        if wrong_exp is not None:
            add("wrong:exponent", _replace_box(sol, wrong_exp), False)
        span = _last_box_span(sol)
        if span is not None:
            add("truncated", sol[: span[0]].rstrip(), False)
    return cases


def minerva_cases(data_dir: str, limit: int | None) -> list[dict]:
    from harness.data.realdata import data_file

    path = data_file(data_dir, "minerva_math")
    rows = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
    rows = rows[:limit] if limit else rows
    cases = []
    for r in rows:
        pid, sol = f"minerva/{r['idx']}", r["solution"]
        raw = extract_answer(sol)
        if raw is None:
            continue
        gold = normalize_answer(raw)  # as harness.evaluate.tasks.common loads it

        def add(kind, response, expected):
            if response is not None:
                cases.append({"id": f"{pid}#{kind}", "problem": pid, "kind": kind, "gold": gold, "gold_lmeval": raw,
                              "gold_raw": raw, "response": response, "expected": expected})

        span = _last_box_span(sol)
        unit = None
        if span is not None:
            m = _UNIT_AFTER_BOX_RE.match(sol[span[2] + 1:])
            unit = m.group(1) if m else None
        add("reference", sol, True)
        add("statement", sol.rstrip() + f"\nFinal Answer: The final answer is ${raw}$. I hope it is correct.", True)
        for rule, form in equivalent_forms(raw, unit):
            add(f"equiv:{rule}", _replace_box(sol, form), True)
        add("wrong", _replace_box(sol, _perturb(raw)), False)
        wrong_exp = wrong_exponent(raw)
        if wrong_exp is not None:
            add("wrong:exponent", _replace_box(sol, wrong_exp), False)
        if span is not None:
            add("truncated", sol[: span[0]].rstrip(), False)
    return cases


def load_verifier(root: str | None):
    """``harness.verify`` of this checkout, or the version under ``root`` (see bench_verify.load_verifier)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_verify import load_verifier as load

    return load(root)


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


def _score(cases: list[dict], module, workers: int, timeout: float, gold_key: str = "gold"):
    t0 = time.time()
    with module.Verifier(workers=workers, timeout=timeout) as v:
        verdicts = v.verify_many([{"id": c["id"], "gold": c.get(gold_key, c["gold"]), "pred": c["response"]}
                                  for c in cases])
    return verdicts, time.time() - t0


def _rates(rows: list[tuple[dict, object, dict]]) -> dict:
    n = len(rows)
    labelled = [(c, o, t) for c, o, t in rows if c["expected"] is not None]
    return {
        "n": n,
        "disagreement_rate": sum(o.correct != t["correct"] for _c, o, t in rows) / n if n else None,
        "disagreement_rate_vs_strict": sum(o.correct != t["strict"] for _c, o, t in rows) / n if n else None,
        "ours_accuracy_vs_expected": (sum(o.correct == c["expected"] for c, o, _t in labelled) / len(labelled)
                                      if labelled else None),
        "lmeval_accuracy_vs_expected": (sum(t["correct"] == c["expected"] for c, _o, t in labelled) / len(labelled)
                                        if labelled else None),
        "ours_gold_error": sum(o.status == "gold_error" for _c, o, _t in rows),
    }


def _pct(x) -> str:
    return "n/a" if x is None else f"{x:.2%}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="JSON report path")
    p.add_argument("--data-dir", default=os.environ.get("RLVR_DATA_DIR") or os.path.join(REPO_ROOT, "..", "shared",
                                                                                            "data"))
    p.add_argument("--benchmark", choices=["math500", "minerva_math", "both"], default="math500",
                   help="reference solutions to build the responses from (default math500)")
    p.add_argument("--limit", type=int, default=None, help="first N problems of each benchmark (default all)")
    p.add_argument("--responses", default=None, help="audit these responses instead (harness eval --samples-out)")
    p.add_argument("--baseline", default=None, help="also score with the verifier under DIR/harness/verify")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--timeout", type=float, default=5.0)
    p.add_argument("--examples", type=int, default=5, help="example disagreements printed per kind")
    a = p.parse_args(argv)

    if a.responses:
        cases = response_cases(a.responses)
        for c in cases:
            c["bench"] = "responses"
    else:
        cases = []
        for bench in (["math500", "minerva_math"] if a.benchmark == "both" else [a.benchmark]):
            built = math500_cases(a.data_dir, a.limit) if bench == "math500" else minerva_cases(a.data_dir, a.limit)
            for c in built:
                c["bench"] = bench
            cases += built
    ours, t_ours = _score(cases, load_verifier(None), a.workers, a.timeout)
    # the baseline scores against the gold its own loader produced (Minerva: the raw box content)
    base, t_base = (_score(cases, load_verifier(a.baseline), a.workers, a.timeout, gold_key="gold_raw")
                    if a.baseline else (None, 0.0))
    t0 = time.time()
    theirs = [lmeval_score(c["response"], c.get("gold_lmeval", c["gold"])) for c in cases]
    t_lm = time.time() - t0

    groups = defaultdict(list)
    base_groups = defaultdict(list)
    examples = defaultdict(list)
    for i, (c, o, t) in enumerate(zip(cases, ours, theirs)):
        key = f"{c['bench']}:{c['kind']}"
        groups[key].append((c, o, t))
        groups[c["bench"]].append((c, o, t))
        groups["all"].append((c, o, t))
        if base is not None:
            for g in (key, c["bench"], "all"):
                base_groups[g].append((c, base[i], t))
        if o.correct != t["correct"]:
            examples[key].append({"id": c["id"], "gold": c["gold"], "expected": c["expected"],
                                  "ours": {"correct": o.correct, "status": o.status, "extracted": o.extracted},
                                  "lmeval": t, "response_tail": _tail(c["response"])})
    summary = {g: _rates(rows) for g, rows in groups.items()}
    report = {"kind": "verifier_audit", "summary": summary["all"], "by_group": summary,
              "baseline": ({g: _rates(rows) for g, rows in base_groups.items()} if base is not None else None),
              "baseline_dir": a.baseline, "seconds": {"ours": t_ours, "baseline": t_base, "lmeval": t_lm},
              "disagreements": dict(examples),
              "verifier": verifier_config(timeout=a.timeout),
              "lmeval_scorer": "lm_eval.tasks.minerva_math.utils: get_unnormalized_answer, else last_boxed_only_string"
                               "+remove_boxed; normalize_final_answer; is_equiv",
              "lmeval_parser": _LMEVAL.get("parser"),
              "source": a.responses or f"{a.data_dir} ({a.benchmark})", "provenance": provenance()}
    atomic_write_json(a.out, report)

    n = len(cases)
    print(f"{n} responses ({len({c['problem'] for c in cases})} problems); ours {t_ours:.1f}s"
          + (f", baseline {t_base:.1f}s" if base is not None else "") + f", lm-eval {t_lm:.1f}s")
    print(f"lm-eval LaTeX parser: {_LMEVAL.get('parser')}")
    head = f"{'group':<34}{'n':>6}{'disagree':>10}{'vs strict':>10}{'ours ok':>9}{'lm-eval ok':>11}"
    if base is not None:
        head += f"{'base dis.':>10}{'base ok':>9}"
    print("disagreement: ours vs lm-eval minerva (+ boxed fallback) / vs lm-eval exact_match (statement only);\n"
          "ok: agreement with the expected label" + ("; base: the --baseline verifier" if base is not None else ""))
    print(head)
    order = ["all"] + sorted(g for g in groups if ":" not in g and g != "all") + sorted(g for g in groups if ":" in g)
    for g in order:
        r = summary[g]
        line = (f"{g:<34}{r['n']:>6}{_pct(r['disagreement_rate']):>10}{_pct(r['disagreement_rate_vs_strict']):>10}"
                f"{_pct(r['ours_accuracy_vs_expected']):>9}{_pct(r['lmeval_accuracy_vs_expected']):>11}")
        if base is not None:
            b = report["baseline"][g]
            line += f"{_pct(b['disagreement_rate']):>10}{_pct(b['ours_accuracy_vs_expected']):>9}"
        print(line)
    for key, ex in sorted(examples.items()):
        print(f"\n-- {key}: {len(ex)} disagreement(s), first {min(a.examples, len(ex))}")
        for e in ex[: a.examples]:
            print(f"  {e['id']}: gold {e['gold']!r}; ours {e['ours']['correct']} ({e['ours']['status']}, "
                  f"{e['ours']['extracted']!r}); lm-eval {e['lmeval']['correct']} ({e['lmeval']['extracted']!r})")
    print(f"\nwrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
