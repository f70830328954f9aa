"""Pull the final answer out of a model response, with bounded work on any input.

Owns two extractors shared by every task:

- `extract_answer`: the content of the last complete `<answer> ... </answer>` pair.
- `extract_boxed`: the content of the last `\\boxed{...}` (or `\\fbox{...}`), braces balanced.

Both only look at the last `MAX_SCAN_CHARS` characters of the response (the final answer is
at the end; earlier text cannot change which pair is last in practice) and use plain
`str.find`/`rfind` scans, never backtracking regular expressions, so a 1 MB response costs a
few milliseconds.
"""

from __future__ import annotations

MAX_SCAN_CHARS = 100_000
"""Only the tail of this many characters of a response is searched."""

MAX_BOXED_CHARS = 10_000
"""A `\\boxed{` group longer than this is treated as unterminated."""

_OPEN, _CLOSE = "<answer>", "</answer>"


def _tail(text: str) -> str:
    return text[-MAX_SCAN_CHARS:] if len(text) > MAX_SCAN_CHARS else text


def extract_answer(text: str | None) -> str | None:
    """Return the stripped content of the last complete `<answer>...</answer>` pair, or None.

    "Last complete pair" means: the last `<answer>` that is followed by a `</answer>`, up to
    the first `</answer>` after it. So `<answer><answer> x </answer></answer>` gives "x", and
    a trailing unterminated `<answer> ...` is ignored in favour of an earlier complete pair.
    """
    if not isinstance(text, str) or not text:
        return None
    text = _tail(text)
    close = text.rfind(_CLOSE)
    if close < 0:
        return None
    start = text.rfind(_OPEN, 0, close)
    if start < 0:
        return None
    start += len(_OPEN)
    end = text.find(_CLOSE, start)
    return text[start:end].strip()


def extract_boxed(text: str | None) -> str | None:
    """Return the stripped content of the last `\\boxed{...}` / `\\fbox{...}`, or None.

    Braces inside the group must balance; `\\boxed 5` (no braces) yields "5". If the last
    `\\boxed` is unterminated, None is returned (an earlier box is not an answer the model
    stood by).
    """
    if not isinstance(text, str) or not text:
        return None
    text = _tail(text)
    idx = text.rfind("\\boxed")
    name_len = len("\\boxed")
    if idx < 0:
        idx = text.rfind("\\fbox")
        name_len = len("\\fbox")
        if idx < 0:
            return None
    pos = idx + name_len
    if pos < len(text) and text[pos] == " ":
        # "\boxed 5$" form: the token up to whitespace or "$".
        rest = text[pos + 1 : pos + 1 + MAX_BOXED_CHARS]
        token = []
        for ch in rest:
            if ch in "$" or ch.isspace():
                break
            token.append(ch)
        value = "".join(token).strip()
        return value or None
    if pos >= len(text) or text[pos] != "{":
        return None
    depth = 0
    limit = min(len(text), pos + MAX_BOXED_CHARS)
    for i in range(pos, limit):
        ch = text[i]
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[pos + 1 : i].strip()
    return None
