"""Property tests for harness.verify (hypothesis; kept small so the suite stays fast)."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.verify import GoldParseError, Verdict, Verifier, extract_answer, is_equivalent, verify

FAST = settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

# --- strategies -------------------------------------------------------------

small_int = st.integers(min_value=-50, max_value=50)
pos_int = st.integers(min_value=1, max_value=30)
var = st.sampled_from(["x", "y", "a", "b", "n"])


def _atoms():
    return st.one_of(
        small_int.map(str),
        st.tuples(small_int, pos_int).map(lambda t: f"\\frac{{{t[0]}}}{{{t[1]}}}"),
        st.integers(min_value=2, max_value=50).map(lambda n: f"\\sqrt{{{n}}}"),
        st.just("\\pi"),
        var,
    )


def _expr(children):
    return st.one_of(
        st.tuples(children, children).map(lambda t: f"{t[0]}+{t[1]}"),
        st.tuples(children, children).map(lambda t: f"({t[0]})({t[1]})"),
        st.tuples(children, st.integers(min_value=2, max_value=3)).map(lambda t: f"({t[0]})^{{{t[1]}}}"),
        st.tuples(children, children).map(lambda t: f"\\frac{{{t[0]}}}{{{t[1]}}}"),
    )


expressions = st.recursive(_atoms(), _expr, max_leaves=4)

answers = st.one_of(
    expressions,
    st.lists(small_int, min_size=2, max_size=4).map(lambda xs: "(" + ", ".join(map(str, xs)) + ")"),
    st.lists(small_int, min_size=2, max_size=4, unique=True).map(lambda xs: ", ".join(map(str, xs))),
    st.tuples(small_int, small_int, st.booleans(), st.booleans())
    .filter(lambda t: t[0] < t[1])
    .map(lambda t: ("(" if t[2] else "[") + f"{t[0]}, {t[1]}" + (")" if t[3] else "]")),
    st.sampled_from(["\\text{(A)}", "B", "\\text{Evelyn}", "30^\\circ", "50\\%", "3+4i", "\\emptyset"]),
)

latex_tokens = st.sampled_from(
    [
        "\\boxed{", "\\fbox{", "}", "{", "\\frac", "\\dfrac", "^", "_", "(", ")", "[", "]", "\\{", "\\}",
        "\\sqrt", "\\left(", "\\right)", "1", "2", "9", "0", "x", "i", "e", ",", ".", "-", "+", "=", "<",
        "\\", "$", " ", "\n", "\\pi", "\\infty", "\\cup", "\\text{", "%", "!", "\\circ", "\\%", "&", "\\\\",
        "Final answer: ", "The final answer is ", "\\begin{pmatrix}", "\\end{pmatrix}", "\x00", "\u03c0",
    ]
)
latexish_text = st.lists(latex_tokens, max_size=14).map("".join)
any_text = st.one_of(st.text(max_size=60), latexish_text)


@pytest.fixture(scope="module")
def pool():
    with Verifier(workers=2, timeout=3.0, warm_up=False) as v:
        yield v


# --- properties -------------------------------------------------------------


@FAST
@given(answers)
def test_equal_inputs_always_equivalent(ans):
    assert is_equivalent(ans, ans)
    assert is_equivalent(ans, f"  {ans} ")
    assert verify(ans, f"Reasoning.\n\nSo the answer is $\\boxed{{{ans}}}$.", timeout=None).correct
    assert verify(ans, ans, mode="plain", timeout=None).correct


@FAST
@given(st.integers(min_value=0, max_value=10**9))
def test_integer_formatting_is_equivalent(n):
    assert is_equivalent(str(n), "0" + str(n))
    assert is_equivalent(str(n), f"{n:,}")
    assert is_equivalent(f"{n:,}", str(n))
    assert not is_equivalent(str(n), str(n + 1))


@FAST
@given(st.integers(min_value=-200, max_value=200), st.sampled_from([1, 2, 4, 5, 8, 10, 20, 25, 3, 7, 9]))
def test_fraction_forms_are_equivalent(p, q):
    frac = Fraction(p, q)
    gold = f"\\frac{{{p}}}{{{q}}}"
    assert is_equivalent(gold, f"\\dfrac{{{p}}}{{{q}}}")
    assert is_equivalent(gold, f"{p}/{q}")
    assert is_equivalent(gold, f"\\frac{{{2 * p}}}{{{2 * q}}}")
    if 10**6 % frac.denominator == 0:  # terminating decimal
        assert is_equivalent(gold, str(float(frac)))
    assert not is_equivalent(gold, f"\\frac{{{p + 1}}}{{{q}}}")


@FAST
@given(st.lists(st.integers(min_value=-20, max_value=20), min_size=2, max_size=5, unique=True), st.randoms())
def test_sets_ignore_order_tuples_do_not(xs, rnd):
    ys = list(xs)
    rnd.shuffle(ys)
    assert is_equivalent(", ".join(map(str, xs)), ", ".join(map(str, ys)))
    assert is_equivalent("\\{" + ", ".join(map(str, xs)) + "\\}", "\\{" + ", ".join(map(str, ys)) + "\\}")
    tup_x, tup_y = "(" + ", ".join(map(str, xs)) + ")", "(" + ", ".join(map(str, ys)) + ")"
    assert is_equivalent(tup_x, tup_y) == (xs == ys)


@FAST
@given(any_text)
def test_extraction_never_raises(text):
    out = extract_answer(text)
    assert out is None or isinstance(out, str)


@FAST
@given(any_text)
def test_prediction_text_never_raises_in_process(text):
    for mode in ("boxed", "plain"):
        v = verify("5", text, mode=mode, timeout=None)
        assert isinstance(v, Verdict) and v.status in ("ok", "parse_fail")
        assert v.correct in (True, False)


@FAST
@given(any_text)
def test_gold_text_raises_only_gold_parse_error(text):
    try:
        result = is_equivalent(text, "5")
    except GoldParseError:
        return
    assert result in (True, False)


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(any_text, any_text), min_size=1, max_size=4))
def test_pool_never_raises_on_arbitrary_text(pool, pairs):
    cases = [{"id": str(i), "gold": g, "pred": p} for i, (g, p) in enumerate(pairs)]
    verdicts = pool.verify_many(cases)
    assert [v.id for v in verdicts] == [c["id"] for c in cases]
    for v in verdicts:
        assert v.status in ("ok", "parse_fail", "timeout", "gold_error")
        assert v.correct is False or v.status == "ok"
