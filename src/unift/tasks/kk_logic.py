"""Knights and Knaves logic puzzles (the `kk_logic` set of the UFT paper).

Owns the K&K reward and a generator of new puzzles in the official data format.

Statements use the official nested-tuple form (its `repr` is the `statements` field of the
ground truth): `('telling-truth', i)` "i is a knight", `('lying', i)` "i is a knave",
`('not', s)`, `('and', s1, s2)`, `('or', s1, s2)`, `('->', s1, s2)`, `('<=>', s1, s2)`.

Reward (Logic-RL / UFT rule): the answer is the content of the last `<answer>` tags; every
person must be named as "NAME is a knight|knave" with the right role, and the answer must
mention exactly as many roles as there are people (so hedging such as "Amelia is a knight
or a knave" fails). 0.0 without an answer, 0.1 if parsed but wrong or incomplete, 1.0 if
every role matches.

The generator samples statements like the official sampler (depth 2, width 2), keeps only
puzzles with a unique solution (brute force over all 2^N assignments) and writes the
reference solution as the official backtracking-solver narrative, one piece per sentence.
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Mapping, Sequence
from typing import Any

from unift.tasks.answer import extract_answer
from unift.tasks.base import CORRECT_SCORE, FORMAT_SCORE, Example, Reward

Statement = tuple[Any, ...]

NAMES = (
    "Emma", "Liam", "Olivia", "Noah", "Ava", "Ethan", "Sophia", "Mason", "Isabella", "William",
    "Mia", "James", "Charlotte", "Benjamin", "Amelia", "Lucas", "Harper", "Henry", "Evelyn",
    "Alexander", "Abigail", "Michael", "Emily", "Daniel", "Elizabeth", "Jacob", "Sofia",
    "Logan", "Avery", "Jackson", "Ella", "Sebastian", "Scarlett", "Jack", "Grace", "Aiden",
    "Chloe", "Owen", "Victoria", "Samuel", "Riley", "Matthew", "Aria", "Joseph", "Lily", "Luke",
    "Aurora", "David", "Zoey", "Oliver", "Penelope",
)  # fmt: skip
"""First names used by the official puzzles."""

SAYING_TEMPLATES = (
    '{name} said that {content}.',
    '{name} told you that {content}.',
    '{name} said, "{content}."',
    '{name} stated, "{content}".',
    'According to {name}, "{content}".',
    'In {name}\'s words: "{content}".',
    '{name} remarked, "{content}".',
    '"{content}," {name} declared.',
    '{name} was heard saying, "{content}".',
    '{name} expressed that {content}.',
    '"{content}" - {name}.',
    'As {name} put it, "{content}".',
    '{name} asserted: "{content}".',
    '"{content}," {name} mentioned.',
    '{name} commented, "{content}".',
    'In a statement by {name}: "{content}".',
    '{name} noted, "{content}".',
    '"{content}," {name} claimed.',
)
"""The sentence frames of statements in the official prompts."""

PROMPT_HEAD = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant "
    "solves it. The assistant first thinks about the reasoning process in the mind and then "
    "provides the user with the answer.\nUser: "
)
PROMPT_TAIL = (
    " Show your work in <think> </think> tags. And return the final answer in <answer> "
    "</answer> tags, for example <answer> (1) Zoey is a knight\n(2) Oliver is a knight\n"
    "(3)... </answer>.\nAssistant: Let me solve this step by step.\n<think> "
)
QUIZ_HEAD = (
    "A very special island is inhabited only by knights and knaves. Knights always tell the "
    "truth, and knaves always lie. "
)
QUIZ_TAIL = " So who is a knight and who is a knave?"


# --------------------------------------------------------------------------------------------
# Logic


def truth(statement: Statement, assignment: Sequence[bool]) -> bool:
    """Truth value of `statement` when person i is a knight iff `assignment[i]`."""
    kind = statement[0]
    if kind == "telling-truth":
        return bool(assignment[statement[1]])
    if kind == "lying":
        return not assignment[statement[1]]
    if kind == "not":
        return not truth(statement[1], assignment)
    if kind == "and":
        return all(truth(s, assignment) for s in statement[1:])
    if kind == "or":
        return any(truth(s, assignment) for s in statement[1:])
    if kind == "->":
        return (not truth(statement[1], assignment)) or truth(statement[2], assignment)
    if kind == "<=>":
        return truth(statement[1], assignment) == truth(statement[2], assignment)
    raise ValueError(f"unknown statement kind {kind!r}")


def solve(statements: Sequence[Statement]) -> list[tuple[bool, ...]]:
    """All consistent assignments: each knight's statement true, each knave's false."""
    n = len(statements)
    return [
        assignment
        for assignment in itertools.product((True, False), repeat=n)
        if all(truth(s, assignment) == assignment[i] for i, s in enumerate(statements))
    ]


def mentioned(statement: Statement) -> list[int]:
    """People referred to by `statement`, in order of appearance (with repeats)."""
    if statement[0] in ("telling-truth", "lying"):
        return [statement[1]]
    return [p for sub in statement[1:] for p in mentioned(sub)]


# --------------------------------------------------------------------------------------------
# Text


def _role(knight: bool) -> str:
    return "a knight" if knight else "a knave"


def _atom(names: Sequence[str], statement: Statement, negated: bool = False) -> str:
    kind, person = statement
    if kind not in ("telling-truth", "lying"):
        raise ValueError("statements deeper than 2 levels cannot be written out")
    return f"{names[person]} is {'not ' if negated else ''}{_role(kind == 'telling-truth')}"


def format_statement(names: Sequence[str], statement: Statement) -> str:
    """The English claim for `statement`, e.g. "Evelyn is not a knight"."""
    kind = statement[0]
    if kind == "not":
        return _atom(names, statement[1], negated=True)
    if kind in ("and", "or"):
        return f" {kind} ".join(_atom(names, s) for s in statement[1:])
    if kind == "->":
        return f"If {_atom(names, statement[1])} then {_atom(names, statement[2])}"
    if kind == "<=>":
        return f"{_atom(names, statement[1])} if and only if {_atom(names, statement[2])}"
    return _atom(names, statement)


def solution_text(names: Sequence[str], solution: Sequence[bool]) -> str:
    """The official answer text: "(1) A is a knight\\n(2) B is a knave..."."""
    return "\n".join(
        f"({i}) {name} is {_role(knight)}" for i, (name, knight) in enumerate(zip(names, solution), 1)
    )


def format_prompt(names: Sequence[str], statements: Sequence[Statement], templates: Sequence[str]) -> str:
    """The official TinyZero prompt; `templates[i]` frames the statement of person i."""
    quiz = QUIZ_HEAD + f"You meet {len(names)} inhabitants: "
    quiz += ", ".join(names[:-1]) + ", and " + names[-1] + "."
    for name, statement, template in zip(names, statements, templates):
        quiz += " " + template.format(name=name, content=format_statement(names, statement))
    return PROMPT_HEAD + quiz + QUIZ_TAIL + PROMPT_TAIL


# --------------------------------------------------------------------------------------------
# Reference solution: the official backtracking narrative


def _claim_consistent(statement: Statement, knight: bool, partial: Sequence[bool | None]) -> bool:
    """Can the claim of a knight (or the negated claim of a knave) still come out true?"""
    free = [i for i, v in enumerate(partial) if v is None]
    full = list(partial)
    for values in itertools.product((True, False), repeat=len(free)):
        for i, v in zip(free, values):
            full[i] = v
        if truth(statement, full) == knight:
            return True
    return False


def _first_contradiction(statements: Sequence[Statement], partial: Sequence[bool | None]) -> int | None:
    for person, role in enumerate(partial):
        if role is not None and not _claim_consistent(statements[person], role, partial):
            return person
    return None


def _name_list(names: Sequence[str]) -> str:
    if len(names) <= 2:
        return " and ".join(names)
    return ", ".join(names[:-1]) + ", and " + names[-1]


def solution_pieces(names: Sequence[str], statements: Sequence[Statement]) -> list[str]:
    """Reference solution pieces in the official solver-sentence style.

    Depth-first search: assume the next person is a knight (then a knave); if some assigned
    person's claim can no longer be (or fail to be) true, say whose claim it contradicts; when
    both roles fail, backtrack. After a successful assumption, the people that person talks
    about are considered next. Ends with "Therefore, (1) ..." split one line per piece.
    """
    n = len(statements)
    partial: list[bool | None] = [None] * n
    options = {p: [False, True] for p in range(n)}  # pop() tries "knight" first
    order = list(range(n))
    cursor = 0
    pieces: list[str] = []

    def claim(knight: bool) -> str:
        return ("" if knight else "false ") + "claim"

    while cursor < n:
        if not options[order[cursor]]:
            exhausted = []
            while cursor >= 0 and not options[order[cursor]]:
                person = order[cursor]
                options[person] = [False, True]
                partial[person] = None
                exhausted.append(person)
                cursor -= 1
            if cursor < 0:
                raise ValueError("puzzle has no solution")
            pieces.append(
                f"We have exhausted all possibilities for {_name_list([names[p] for p in exhausted])}, "
                f"so let us go back and reconsider {names[order[cursor]]}.\n"
            )
        person = order[cursor]
        knight = options[person].pop()
        partial[person] = knight
        culprit = _first_contradiction(statements, partial)
        if culprit is None:
            pieces.append(f"Assume {names[person]} is {_role(knight)}. ")
            pieces.append(
                f"No contradiction is found in their {claim(knight)} that "
                f"{format_statement(names, statements[person])}.\n"
            )
            cursor += 1
            first_mentions = list(dict.fromkeys(mentioned(statements[person])))
            rest = order[cursor:]
            front = [p for p in first_mentions if p in rest]
            order = order[:cursor] + front + [p for p in rest if p not in front]
        else:
            whose = "their own" if culprit == person else names[culprit]
            pieces.append(
                f"{names[person]} cannot be {_role(knight)}, because this would contradict the "
                f"{claim(bool(partial[culprit]))} of {whose} that "
                f"{format_statement(names, statements[culprit])}.\n"
            )
    final = [f"({i}) {name} is {_role(bool(partial[i - 1]))}\n" for i, name in enumerate(names, 1)]
    final[0] = "Therefore, " + final[0]
    final[-1] = final[-1].rstrip("\n")
    return pieces + final


# --------------------------------------------------------------------------------------------
# Sampling


def _sample_atom(rng: random.Random, speaker: int, n: int) -> Statement:
    while True:
        kind = rng.choice(("telling-truth", "lying"))
        person = rng.randrange(n)
        if not (kind == "lying" and person == speaker):  # "I am a knave" is paradoxical
            return (kind, person)


def _sample_statement(rng: random.Random, speaker: int, n: int) -> Statement:
    """One claim of depth <= 2: an atom, its negation, or a binary connective of two atoms."""
    dice = rng.randrange(6)
    if dice == 0:
        return _sample_atom(rng, speaker, n)
    if dice == 1:
        return ("not", _sample_atom(rng, speaker, n))
    operator = ("and", "or", "->", "<=>")[dice - 2]
    first = _sample_atom(rng, speaker, n)
    second = _sample_atom(rng, speaker, n)
    while second == first:
        second = _sample_atom(rng, speaker, n)
    return (operator, first, second)


def _parse_roles(ground_truth: Any) -> tuple[list[str], list[bool]]:
    if isinstance(ground_truth, Mapping):
        names = ground_truth.get("names")
        solution = ground_truth.get("solution")
        if names and solution is not None and len(names) == len(solution):
            return [str(x) for x in names], [bool(x) for x in solution]
        text = ground_truth.get("solution_text_format")
    else:
        text = ground_truth
    if not isinstance(text, str):
        raise ValueError("kk_logic ground_truth needs names+solution or solution_text_format")
    names, roles = [], []
    for line in text.split("\n"):
        match = re.search(r"\b([A-Za-z]+) is an? (knight|knave)\b", line)
        if match:
            names.append(match.group(1))
            roles.append(match.group(2) == "knight")
    if not names:
        raise ValueError("kk_logic ground_truth names nobody")
    return names, roles


_ROLE_WORD = re.compile(r"knight|knave", re.IGNORECASE)
MAX_ANSWER_CHARS = 5_000


class KKLogicTask:
    """Knights and Knaves reward and puzzle generator (task name "kk_logic")."""

    name = "kk_logic"

    def score(self, response: str, ground_truth: Any) -> Reward:
        names, roles = _parse_roles(ground_truth)
        answer = extract_answer(response)
        if answer is None:
            return Reward(0.0, None, "no answer")
        if len(answer) > MAX_ANSWER_CHARS:
            return Reward(FORMAT_SCORE, answer[:100], "answer too long")
        if len(_ROLE_WORD.findall(answer)) != len(names):
            return Reward(FORMAT_SCORE, answer[:200], "number of roles differs from number of people")
        for name, knight in zip(names, roles):
            claims = re.findall(rf"\b{re.escape(name)}\s+is\s+a\s+(knight|knave)\b", answer, re.IGNORECASE)
            if not claims:
                return Reward(FORMAT_SCORE, answer, f"no role for {name}")
            if {c.lower() for c in claims} != {"knight" if knight else "knave"}:
                return Reward(FORMAT_SCORE, answer, f"wrong role for {name}")
        return Reward(CORRECT_SCORE, answer, "correct")

    def generate(self, n: int, seed: int, min_people: int = 3, max_people: int = 5) -> list[Example]:
        """`n` new puzzles with unique solutions; the same seed gives the same puzzles."""
        if not 2 <= min_people <= max_people <= len(NAMES):
            raise ValueError(f"need 2 <= min_people <= max_people <= {len(NAMES)}")
        if max_people > 12:
            raise ValueError("more than 12 people makes brute-force solving too slow")
        rng = random.Random(seed)
        examples: list[Example] = []
        seen: set[tuple[Statement, ...]] = set()
        while len(examples) < n:
            people = rng.randint(min_people, max_people)
            statements = tuple(_sample_statement(rng, i, people) for i in range(people))
            if statements in seen:
                continue
            solutions = solve(statements)
            if len(solutions) != 1:
                continue
            seen.add(statements)
            names = rng.sample(NAMES, people)
            templates = [rng.choice(SAYING_TEMPLATES) for _ in range(people)]
            examples.append(_make_example(names, statements, solutions[0], templates))
        return examples


def _make_example(
    names: list[str], statements: tuple[Statement, ...], solution: tuple[bool, ...], templates: list[str]
) -> Example:
    pieces = solution_pieces(names, statements)
    answer = solution_text(names, solution)
    return Example(
        prompt=format_prompt(names, statements, templates),
        completion="".join(pieces) + f" </think>\n<answer> {answer} </answer>",
        pieces=pieces,
        ground_truth={
            "names": list(names),
            "solution": list(solution),
            "solution_text_format": answer,
            "statements": repr(statements),
        },
        data_source="kk_logic",
        task="kk_logic",
    )
