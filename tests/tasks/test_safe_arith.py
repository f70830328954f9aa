"""The bounded Countdown arithmetic evaluator: exact values, literals, and clean rejection."""

import time
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unift.tasks.safe_arith import ArithmeticParseError, evaluate, tokenize


@pytest.mark.parametrize(
    "expression, value",
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("((76 - 47) + 55) - 60", 24),
        ("78 - (43 - 41)", 76),
        ("8 - 3 - 2", 3),  # left associative
        ("12 / 4 / 3", 1),
        ("1 / 3 * 3", 1),  # exact: no float rounding
        ("-(3 - 5)", 2),
        ("- -4", 4),
        ("+7", 7),
        ("6 × 7 ÷ 2", 21),
        ("10 − 4", 6),  # unicode minus
        ("  5  ", 5),
    ],
)
def test_values(expression, value):
    assert evaluate(expression).value == value


def test_value_is_exact_fraction():
    assert evaluate("1 / 3").value == Fraction(1, 3)
    assert evaluate("(2 / 3) + (1 / 3)").value == 1


def test_literals_in_order():
    assert evaluate("((76 - 47) + 55) - 60").literals == [76, 47, 55, 60]
    assert evaluate("007 + 1").literals == [7, 1]


def test_tokenize():
    assert tokenize("(12+3)*4") == ["(", "12", "+", "3", ")", "*", "4"]


@pytest.mark.parametrize(
    "expression",
    [
        "",
        "   ",
        "1 / 0",
        "5 / (3 - 3)",
        "2 ** 3",
        "__import__('os')",
        "os.system('ls')",
        "1.5 + 2",
        "1e5",
        "١٢ + 3",  # Arabic-Indic digits
        "４ + 1",  # full-width digit
        "(1 + 2",
        "1 + 2)",
        "1 +",
        "* 3",
        "1 2",
        "()",
        "x + 1",
        "1 = 1",
        "9" * 10_000,
        "(" * 10_000 + "1" + ")" * 10_000,
        "(" * 100 + "1" + ")" * 100,
        "-" * 500 + "1",
        "99999999999 * 99999999999 * 99999999999 * 99999999999 * 99999999999 * 99999999999",
        " + ".join(["1"] * 400),
        "1" + " " * 2000,
    ],
)
def test_rejects(expression):
    start = time.perf_counter()
    with pytest.raises(ArithmeticParseError):
        evaluate(expression)
    assert time.perf_counter() - start < 5.0


def test_error_is_value_error():
    assert issubclass(ArithmeticParseError, ValueError)


def test_non_string_rejected():
    with pytest.raises(ArithmeticParseError):
        evaluate(None)  # type: ignore[arg-type]


def test_moderate_nesting_accepted():
    assert evaluate("(" * 40 + "1" + ")" * 40).value == 1


@st.composite
def expressions(draw, depth=0):
    """(text, exact value, literals) for a random well-formed expression."""
    if depth >= 4 or draw(st.booleans()):
        n = draw(st.integers(min_value=0, max_value=999))
        return str(n), Fraction(n), [n]
    left = draw(expressions(depth=depth + 1))
    right = draw(expressions(depth=depth + 1))
    op = draw(st.sampled_from("+-*/"))
    if op == "/" and right[1] == 0:
        op = "+"
    value = {"+": left[1] + right[1], "-": left[1] - right[1], "*": left[1] * right[1]}.get(
        op, left[1] / right[1] if right[1] else None
    )
    return f"({left[0]} {op} {right[0]})", value, left[2] + right[2]


@settings(max_examples=300, deadline=None)
@given(expressions())
def test_random_expressions_evaluate_exactly(expr):
    text, value, literals = expr
    result = evaluate(text)
    assert result.value == value
    assert result.literals == literals


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("0123456789+-*/() ×÷−.a_'")) | st.characters(), max_size=60))
def test_arbitrary_text_only_raises_parse_error(text):
    try:
        result = evaluate(text)
    except ArithmeticParseError:
        return
    assert isinstance(result.value, Fraction)
