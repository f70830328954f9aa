"""The MATH answer normalisation of the Hendrycks MATH harness (lm-evaluation-harness
hendrycks_math), as the official UFT code uses it (verl/utils/reward_score/math.py), ported
verbatim: `hendrycks_strip_string` and `hendrycks_is_equiv`. Only `strip_string` is cut in two
functions (`_strip_symbols` is its first half); the order of the replacements is the original's.
"""

from __future__ import annotations


def hendrycks_is_equiv(str1: str | None, str2: str | None) -> bool:
    """`is_equiv` of the Hendrycks MATH harness: normalised strings equal, or, when the
    normalisation raises, the raw strings equal."""
    if str1 is None and str2 is None:
        return True
    if str1 is None or str2 is None:
        return False
    try:
        ss1 = hendrycks_strip_string(str1)
        ss2 = hendrycks_strip_string(str2)
        return ss1 == ss2
    except Exception:  # noqa: BLE001 - the official fallback, kept on purpose
        return str1 == str2


def _fix_fracs(string: str) -> str:
    substrs = string.split("\\frac")
    new_str = substrs[0]
    if len(substrs) > 1:
        substrs = substrs[1:]
        for substr in substrs:
            new_str += "\\frac"
            if substr[0] == "{":  # IndexError on a trailing "\frac": caught by is_equiv
                new_str += substr
            else:
                if len(substr) < 2:  # the official `assert len(substr) >= 2` ... `except AssertionError`
                    return string
                a = substr[0]
                b = substr[1]
                if b != "{":
                    if len(substr) > 2:
                        post_substr = substr[2:]
                        new_str += "{" + a + "}{" + b + "}" + post_substr
                    else:
                        new_str += "{" + a + "}{" + b + "}"
                else:
                    if len(substr) > 2:
                        post_substr = substr[2:]
                        new_str += "{" + a + "}" + b + post_substr
                    else:
                        new_str += "{" + a + "}" + b
    string = new_str
    return string


def _fix_a_slash_b(string: str) -> str:
    if len(string.split("/")) != 2:
        return string
    a = string.split("/")[0]
    b = string.split("/")[1]
    a = int(a)  # ValueError is NOT caught officially (only AssertionError): is_equiv falls back
    b = int(b)
    if string != f"{a}/{b}":  # the official assert ... `except AssertionError`
        return string
    new_string = "\\frac{" + str(a) + "}{" + str(b) + "}"
    return new_string


def _remove_right_units(string: str) -> str:
    # "\\text{ " only ever occurs (at least in the val set) when describing units
    if "\\text{ " in string:
        splits = string.split("\\text{ ")
        if len(splits) != 2:  # the official `assert len(splits) == 2`, independent of -O
            raise AssertionError("more than one '\\text{ '")
        return splits[0]
    else:
        return string


def _fix_sqrt(string: str) -> str:
    if "\\sqrt" not in string:
        return string
    splits = string.split("\\sqrt")
    new_string = splits[0]
    for split in splits[1:]:
        if split[0] != "{":  # IndexError on a trailing "\sqrt": caught by is_equiv
            a = split[0]
            new_substr = "\\sqrt{" + a + "}" + split[1:]
        else:
            new_substr = "\\sqrt" + split
        new_string += new_substr
    return new_string


def hendrycks_strip_string(string: str) -> str:
    """`strip_string` of the Hendrycks MATH harness (may raise: see `hendrycks_is_equiv`).

    The official asserts are written as explicit checks, so `python -O` changes nothing.
    """
    string = _strip_symbols(string)

    # " 0." equivalent to " ." and "{0." equivalent to "{." Alternatively, add "0" if "." is the start of the string
    string = string.replace(" .", " 0.")
    string = string.replace("{.", "{0.")
    # if empty, return empty string
    if len(string) == 0:
        return string
    if string[0] == ".":
        string = "0" + string

    # to consider: get rid of e.g. "k = " or "q = " at beginning
    if len(string.split("=")) == 2:
        if len(string.split("=")[0]) <= 2:
            string = string.split("=")[1]

    # fix sqrt3 --> sqrt{3}
    string = _fix_sqrt(string)

    # remove spaces
    string = string.replace(" ", "")

    # \frac1b or \frac12 --> \frac{1}{b} and \frac{1}{2}, etc. Even works with \frac1{72} (but not \frac{72}1).
    # Also does a/b --> \\frac{a}{b}
    string = _fix_fracs(string)

    # manually change 0.5 --> \frac{1}{2}
    if string == "0.5":
        string = "\\frac{1}{2}"

    # NOTE: X/Y changed to \frac{X}{Y} in dataset, but in simple cases fix in case the model output is X/Y
    string = _fix_a_slash_b(string)

    return string


def _strip_symbols(string: str) -> str:
    """The first half of `strip_string`: line breaks, spacing and TeX symbols, units, percent."""
    # linebreaks
    string = string.replace("\n", "")

    # remove inverse spaces
    string = string.replace("\\!", "")

    # replace \\ with \
    string = string.replace("\\\\", "\\")

    # replace tfrac and dfrac with frac
    string = string.replace("tfrac", "frac")
    string = string.replace("dfrac", "frac")

    # remove \left and \right
    string = string.replace("\\left", "")
    string = string.replace("\\right", "")

    # Remove circ (degrees)
    string = string.replace("^{\\circ}", "")
    string = string.replace("^\\circ", "")

    # remove dollar signs
    string = string.replace("\\$", "")

    # remove units (on the right)
    string = _remove_right_units(string)

    # remove percentage (the official code has this line twice, as "\\%" and "\%")
    string = string.replace("\\%", "")
    string = string.replace("\\%", "")
    return string
