"""Fail-closed math answer verifier (reward function for RLVR on maths data).

Built on math-verify (comparison: ``math_verify.verify``) and its parsing backend
latex2sympy2_extended + sympy. This module only adds policy around them:

* **What is credited** -- only the answer a response commits to: the last
  ``\\boxed{...}`` / ``\\fbox{...}`` (nested braces handled) or an explicit
  final-answer statement ("The final answer is ...", "Final answer: ..."),
  whichever comes last. No box and no statement -> ``parse_fail``. An
  unterminated (truncated) last box -> ``parse_fail``. ``mode="plain"`` treats
  the whole response as the answer (gold strings, synthetic smoke tasks).
* **Fail-closed** -- an unparsable gold raises :class:`GoldParseError` (status
  ``gold_error`` in batch results); an unparsable prediction is incorrect
  (``parse_fail``); anything over the static size guards is refused before sympy
  sees it; a worker that exceeds the time limit or dies -> ``timeout``.
* **Safe under load** -- :class:`Verifier` runs cases in a pool of worker
  processes (fresh interpreters started with ``subprocess``, so the caller's
  ``__main__`` -- e.g. a training script importing torch -- is never re-imported)
  with an address-space cap (RLIMIT_AS) set in each worker. Timeouts are enforced
  by the parent waiting on sockets and killing the worker -- no SIGALRM anywhere
  (math-verify's own signal timeouts are disabled with ``timeout_seconds=None``),
  so it can be called from threads and from a trainer's reward function.

Normalisation added on top of math-verify (each one is covered by the golden
suite ``tests/data/verify_golden.jsonl``):

* ``i`` is the imaginary unit (math-verify keeps it as a plain symbol whose
  real-ness depends on surrounding whitespace, so ``2i`` != ``2 i`` there);
  every other symbol is parsed with the same assumptions on both sides.
* multiple-choice letters (``C``, ``(C)``, ``\\text{(C)}``, ``\\textbf{(C) }12``)
  and plain-word answers (``\\text{Evelyn}``) are compared as strings;
* thin-space thousands separators (``1\\,000``, ``1\\ 000``, ``1 000``);
* ``\\varnothing``/``\\{\\}`` -> ``\\emptyset``; unicode ``°``, ``π``, ``∞``, ``−``;
* finite sets with symbolic elements are matched element-wise regardless of
  order (math-verify relies on sympy's sort order there).

Physical-science answers (Minerva-Math, OlympiadBench; golden rules ``scientific``,
``tolerance``, ``units_physical``, ``spacing``, ``pm``):

* **Scientific and e-notation** -- a number in e-notation standing alone (the
  whole answer or a list element, possibly followed by a unit: ``4.5e33``,
  ``1E-05``) is read as ``4.5\\times 10^{33}``; ``4e33``, ``4 \\times 10^{33}``,
  ``4\\cdot 10^{33}`` and ``0.4 \\times 10^{34}`` are one number. Inside a larger
  expression (``2e-1+3``, ``\\frac{1}{2e-1}``) or spaced (``2e - 1``) ``e`` stays
  Euler's number; a lone ``2e-1`` is 0.2.
* **Relative tolerance for scientific-notation golds** -- a gold written as one
  number in scientific or e-notation (a measured, rounded quantity: most
  Minerva-Math golds) is matched by a number within a relative tolerance of 1e-4
  (``|answer - gold| <= 1e-4 * max(|answer|, |gold|)``,
  :data:`harness.verify.numeric.RELATIVE_TOLERANCE`). Source: the Qwen2.5-Math
  evaluation grader (``numeric_equal``, ``math.isclose(..., rel_tol=1e-4)``), the
  evaluation code widely used to report Minerva-Math in RLVR papers; lm-eval's
  ``minerva_math`` (Lewkowycz et al. 2022, appendix D normalisation, then
  ``sympy.simplify(a - b) == 0``) has no tolerance, and math-verify's own rule is
  absolute (rounding to 6 decimals; ``evalf(chop=True)`` for products), under
  which tiny numbers were all equal (``4.6e-24`` = ``4.6e-23``). Every other gold
  keeps exact comparison -- integers, fractions, radicals, pi, and plain decimals
  (MATH's ``.35625`` is an exact value: ``.35626`` is wrong): with a float on
  either side the two must be equal up to float noise (relative 1e-12), or pass
  math-verify's 6-decimal rounding *and* be within the 1e-4 relative tolerance
  (``1/3`` = ``0.333333``, but ``10^{-24}`` != ``0.0``).
* **Units** -- when the gold's value is a number, a trailing unit after an
  answer's number is split off: ``\\text{}``/``\\mathrm{}``/``\\mbox{}`` (with an
  exponent), ``\\AA``, ``\\mu\\text{m}``, ``\\Omega``, or a word after ``~``/``\\,``/
  ``\\;``/``\\ `` (``0.49~arcsec``); the same for a gold stated with a unit. A
  bare word after a plain space is not a unit (``7.6 Z``, ``\\frac{37}{4} m``:
  products with a variable; math-verify's own list of unit words still applies).
  Different units: if both gold and answer state a unit and the units differ after
  spelling normalisation (``\\text{m/s}`` = ``\\mathrm{m}\\,\\mathrm{s}^{-1}`` =
  ``\\text{ meters per second}``; ``\\text{ square inches}`` = ``\\text{in}^2``), the
  answer is wrong -- no unit conversion is attempted (``2~\\text{km}`` for
  ``2000~\\text{m}`` is wrong); if only one side states a unit, or a unit is not a
  product of unit words and powers (``M_\\odot``), the numbers alone decide.
* **Formatting noise** -- LaTeX spacing at either end of the answer (``\\ 8640\\ ``,
  ``\\;3\\;``, ``~``, ``\\quad``) is dropped; ``\\mathbf``/``\\textbf``/
  ``\\boldsymbol``/``\\bm`` around content without letters (a number, fraction or
  radical) is unwrapped (``\\textbf{(C)}`` and bold vectors are left alone); a
  Python-style float literal ``-1./3`` is ``-1/3``.
* **``\\pm`` in answer lists** -- when the gold is a set of solutions, each list
  element with ``\\pm``/``\\mp`` stands for its two values (``1, \\frac{3 \\pm
  \\sqrt{21}}{2}`` = three solutions); golds are expanded the same way. Not inside
  a relation (``x = 1 \\pm 2``) or a tuple/interval. Against a single gold an
  answer with ``\\pm`` is a set, hence wrong (a hedge).
* **Sample-point test** -- two expressions in free symbols that take different
  values at a fixed sample point are different (math-verify's ``simplify`` could
  not prove them equal either); this answers in milliseconds what sympy could
  spend minutes expanding (``(a+b+c+d+e+f)^{80}`` vs ``^{81}``). Agreement leaves
  the verdict to math-verify.

Golds go through the same string normalisation as answers
(:func:`normalize_answer`; the Minerva loader stores golds in that form).

Documented math-verify asymmetries are kept on purpose (they prevent reward
hacking): an interval gold is not matched by an inequality prediction, and an
equation-chain gold is not matched by its final number.

Modules (no one imports a module that imports it back; nothing here imports
torch/transformers or another harness package except ``harness.results``, lazily
in the CLI): ``base`` constants, :class:`GoldParseError`, :class:`Verdict`,
:func:`verifier_config`; ``extract`` the committed answer; ``normalize`` string
normalisation; ``parse`` latex2sympy parsing, size guards and sympy equivalence;
``units`` trailing units; ``numeric`` the numeric policy (tolerance, sample
points); ``compare`` one answer against one gold; ``worker`` the worker process loop;
``pool`` :class:`Verifier` and :func:`shared_verifier`; ``api`` :func:`verify`;
``cli`` ``python -m harness.verify``.
"""

from .api import answer_correct, verify
from .base import (
    MAX_ANSWER_CHARS,
    MAX_BRACKET_DEPTH,
    MAX_RAW_ANSWER_CHARS,
    MAX_RESULT_DIGITS,
    MAX_SUM_TERMS,
    MAX_SYMBOLIC_EXPONENT,
    MODES,
    STATUSES,
    VERIFIER_VERSION,
    GoldParseError,
    Verdict,
    verifier_config,
)
from .cli import cli_main
from .compare import _verify_local, is_equivalent
from .extract import _match_brace, extract_answer
from .normalize import normalize_answer
from .pool import _PKG_ROOT, _WORKER_CODE, Verifier, close_shared, shared_verifier
from .worker import _WARM_UP_PAIRS, _worker_entry

__all__ = [
    "VERIFIER_VERSION",
    "answer_correct",
    "GoldParseError",
    "Verdict",
    "Verifier",
    "cli_main",
    "close_shared",
    "extract_answer",
    "is_equivalent",
    "normalize_answer",
    "shared_verifier",
    "verifier_config",
    "verify",
]
