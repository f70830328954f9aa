"""A small, bounded arithmetic evaluator for Countdown equations (never `eval`).

Grammar (recursive descent over `fractions.Fraction`, so `/` is exact):

    expr   := term (("+" | "-") term)*
    term   := factor (("*" | "/") factor)*
    factor := ("+" | "-") factor | "(" expr ")" | INTEGER

Accepted characters: ASCII digits, `+ - * /`, parentheses and whitespace; `×`, `÷`, `·` and
the unicode minus `−` are read as `*`, `/`, `*` and `-`. Everything else (decimals, names,
`**`, unicode digits, ...) is rejected. Work is bounded: expression length, integer-literal
length, number of literals, nesting depth (parentheses and unary signs) and the size of every
intermediate numerator/denominator. Any failure raises `ArithmeticParseError` (a ValueError).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

MAX_EXPR_CHARS = 1_000
MAX_LITERAL_DIGITS = 12
MAX_LITERALS = 64
MAX_DEPTH = 64
MAX_INTERMEDIATE_DIGITS = 60
"""Numerators and denominators of intermediate results must stay below 10**this."""

_ALIASES = {"×": "*", "÷": "/", "·": "*", "−": "-", "–": "-"}
_OPERATORS = frozenset("+-*/()")
_ASCII_DIGITS = frozenset("0123456789")
_LIMIT = 10**MAX_INTERMEDIATE_DIGITS


class ArithmeticParseError(ValueError):
    """The expression is not a valid, bounded arithmetic expression."""


@dataclass(frozen=True)
class Evaluation:
    """Exact value of an expression and the integer literals it used, in order."""

    value: Fraction
    literals: list[int]


def tokenize(expression: str) -> list[str]:
    """Split `expression` into integer literals and single-character operators."""
    if len(expression) > MAX_EXPR_CHARS:
        raise ArithmeticParseError(f"expression longer than {MAX_EXPR_CHARS} characters")
    tokens: list[str] = []
    digits: list[str] = []
    for ch in expression:
        ch = _ALIASES.get(ch, ch)
        if ch in _ASCII_DIGITS:
            digits.append(ch)
            if len(digits) > MAX_LITERAL_DIGITS:
                raise ArithmeticParseError(f"integer literal longer than {MAX_LITERAL_DIGITS} digits")
            continue
        if digits:
            tokens.append("".join(digits))
            digits = []
        if ch in _OPERATORS:
            tokens.append(ch)
        elif not ch.isspace():
            raise ArithmeticParseError(f"unexpected character {ch!r}")
    if digits:
        tokens.append("".join(digits))
    if not tokens:
        raise ArithmeticParseError("empty expression")
    return tokens


def _checked(value: Fraction) -> Fraction:
    if abs(value.numerator) >= _LIMIT or value.denominator >= _LIMIT:
        raise ArithmeticParseError("intermediate result too large")
    return value


class _Parser:
    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.depth = 0
        self.literals: list[int] = []

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def expr(self) -> Fraction:
        value = self.term()
        while self.peek() in ("+", "-"):
            op = self.take()
            rhs = self.term()
            value = _checked(value + rhs if op == "+" else value - rhs)
        return value

    def term(self) -> Fraction:
        value = self.factor()
        while self.peek() in ("*", "/"):
            op = self.take()
            rhs = self.factor()
            if op == "*":
                value = _checked(value * rhs)
            else:
                if rhs == 0:
                    raise ArithmeticParseError("division by zero")
                value = _checked(value / rhs)
        return value

    def factor(self) -> Fraction:
        token = self.peek()
        if token is None:
            raise ArithmeticParseError("unexpected end of expression")
        if token in ("+", "-", "("):
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise ArithmeticParseError(f"nesting deeper than {MAX_DEPTH}")
            self.take()
            if token == "(":
                value = self.expr()
                if self.peek() != ")":
                    raise ArithmeticParseError("unbalanced parentheses")
                self.take()
            else:
                inner = self.factor()
                value = inner if token == "+" else -inner
            self.depth -= 1
            return value
        if token[0] in _ASCII_DIGITS:
            self.take()
            if len(self.literals) >= MAX_LITERALS:
                raise ArithmeticParseError(f"more than {MAX_LITERALS} numbers")
            number = int(token)
            self.literals.append(number)
            return Fraction(number)
        raise ArithmeticParseError(f"unexpected token {token!r}")


def evaluate(expression: str) -> Evaluation:
    """Evaluate `expression` exactly; raise `ArithmeticParseError` on anything invalid."""
    if not isinstance(expression, str):
        raise ArithmeticParseError("expression must be a string")
    parser = _Parser(tokenize(expression))
    value = parser.expr()
    if parser.pos != len(parser.tokens):
        raise ArithmeticParseError(f"unexpected token {parser.tokens[parser.pos]!r}")
    return Evaluation(value=value, literals=parser.literals)
