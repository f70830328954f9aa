"""The protocol: how a response ends and how its answer is read, one rule for training and evaluation.

The top-level config key `protocol` (and `unift eval --protocol`) selects it for the training
reward, `eval.every`, the final evaluation of `unift train`, `unift eval`, the demo and
`unift compare`, so a number measured in training means the same as one measured afterwards.

    official (default)  the official UFT / TinyZero set-up: generate until EOS (or the chat
                        template's end of turn) or the token budget, with no stop string; read
                        the answer exactly as the official scorers do (`unift.tasks.official`:
                        Countdown, MATH and GSM8K only from the response's last line, so a
                        response that runs on after its answer scores 0). This is what a plain
                        client (transformers, vLLM, a chat UI) sees, and what teaches a model to
                        stop: a response earns a reward only if it ends after its answer.
    unift               unift's earlier behaviour: rollouts and evaluations stop at the string
                        `</answer>`; unift's task scorers (`unift.tasks`: last `<answer>` pair
                        anywhere, `\\boxed{}` and symbolic maths for MATH). Numbers measured this
                        way are not comparable with the papers' and say nothing about whether the
                        model stops by itself.

`rl.stop` adds an opt-in stop string to rollouts under either protocol (a speed knob; see its
help text for what it costs).
"""

from __future__ import annotations

from typing import Any

from unift.choices import PROTOCOLS
from unift.errors import UserError, suggest
from unift.tasks import get_task
from unift.tasks.base import Example, Reward
from unift.tasks.official import official_score

UNIFT_STOP = "</answer>"
"""The stop string of protocol=unift."""


def check(protocol: str) -> str:
    """`protocol` if it is known, else a one-line UserError naming the allowed values."""
    if protocol not in PROTOCOLS:
        close = suggest(str(protocol), PROTOCOLS)
        raise UserError(f"unknown protocol '{protocol}' (allowed: {', '.join(PROTOCOLS)})"
                        + (close if "did you mean" in close else ""))
    return protocol


def stop_strings(protocol: str, extra: str = "") -> tuple[str, ...]:
    """Stop strings of generation: none under official, `</answer>` under unift, plus `extra`."""
    stops = (UNIFT_STOP,) if check(protocol) == "unift" else ()
    return tuple(dict.fromkeys(stops + ((extra,) if extra else ())))


def score(protocol: str, example: Example, response: str) -> Reward:
    """Reward of `response` (hint + generated text, no prompt) for `example` under `protocol`.

    Raises ValueError / KeyError / TypeError for a malformed ground truth (callers name the row)."""
    return score_text(protocol, response, example.ground_truth, example.data_source, example.task)


def score_text(protocol: str, response: str, ground_truth: Any, data_source: str = "", task: str = "") -> Reward:
    if check(protocol) == "official":
        return official_score(response, ground_truth, data_source=data_source, task=task)
    return get_task(task).score(response, ground_truth)


def check_ground_truth(protocol: str, example: Example, where: str) -> None:
    """Score an empty and a minimal response now, so a malformed ground truth fails before any
    model is loaded or generation runs (a one-line UserError naming `where`)."""
    for probe in ("", "<answer> 0 </answer>"):
        try:
            score(protocol, example, probe)
        except MALFORMED as exc:
            raise malformed_ground_truth(where, example.task, exc) from None


MALFORMED = (ValueError, KeyError, TypeError)
"""What a scorer raises for a ground truth it cannot read (`malformed_ground_truth` words it)."""


def malformed_ground_truth(where: str, task: str, exc: Exception) -> UserError:
    """The one-line error for a row whose ground truth a scorer of `task` cannot read."""
    detail = f"no key {exc}" if isinstance(exc, KeyError) else (str(exc).splitlines() or [type(exc).__name__])[0]
    return UserError(f"{where}: malformed ground truth for task {task} ({detail}); fix or remove the row")
