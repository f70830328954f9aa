"""Reward functions from user code, called exactly as TRL's GRPOTrainer calls them.

    reward:
      funcs: [my_rewards.py:format_reward, mypackage.verifiers:exact_match, countdown]
      weights: [0.5, 1.0, 1.0]

A reference is `path/to/file.py:function` (a path relative to the config file's directory, else
the working directory), `package.module:function`, or the name of a built-in task (countdown,
kk_logic, math, gsm8k), which scores under the run's protocol. A function is called once per
batch as

    f(prompts=[...], completions=[...], completion_ids=[...], hints=[...], generated=[...],
      step=N, trainer_state=<.global_step = N>, **columns) -> list[float | None]

with every extra dataset column (ground_truth, data_source, ...) as a keyword list, one entry
per completion; `completions` is the text the policy is credited for (hint + generated text),
or for conversational prompts a one-message list [{"role": "assistant", "content": ...}], as in
TRL. `None` means "no score from this function for this row"; the total is the weighted sum of
the scores that are not None (TRL's nansum), and a row every function left unscored gets 0.

User code runs unsandboxed, as the user, in the training process. It may be buggy, so each
failure is a one-line `UserError` naming the function (and the step and row where it applies),
raised before the step's update, so the last checkpoint is intact: a reference that cannot be
imported, is not callable or cannot take TRL's keywords (checked before the model loads); an
exception (the batch is re-scored row by row to name the first failing row); a result of the
wrong length, a non-number, NaN or inf; no result within `reward.timeout_s` seconds.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import numbers
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unift.deadline import Deadline, time_limit
from unift.errors import UserError, one_line
from unift.tasks import TASKS

PROBE_KEYWORDS = ("prompts", "completions", "completion_ids", "hints", "generated", "step", "trainer_state")


@dataclass
class RewardFunc:
    name: str          # for metrics: rewards/<name>/mean
    fn: Callable[..., Any]
    weight: float = 1.0
    builtin: bool = False  # a built-in task: scored by unift.protocol under the run's protocol


def load_reward_funcs(refs: list[Any], weights: list[float], config_dir: Path | None = None) -> list[RewardFunc]:
    """Import and check every reference (one-line errors), before any model loads. An entry may
    also be a Python callable (`unift.api.train(reward_funcs=...)`)."""
    if weights and len(weights) != len(refs):
        raise UserError(f"reward.weights has {len(weights)} entries for {len(refs)} reward.funcs: "
                        f"give one per function")
    funcs = []
    for i, ref in enumerate(refs):
        weight = float(weights[i]) if weights else 1.0
        if callable(ref):
            check_signature(getattr(ref, "__name__", repr(ref)), ref)
            funcs.append(RewardFunc(getattr(ref, "__name__", f"reward_{i}"), ref, weight))
        elif ":" not in ref:
            if ref not in TASKS:
                raise UserError(f"reward.funcs: '{ref}' is neither a built-in task ({', '.join(sorted(TASKS))}) nor "
                                f"a reference of the form file.py:function or package.module:function")
            funcs.append(RewardFunc(ref, _no_call, weight, builtin=True))
        else:
            fn = _resolve(ref, config_dir)
            check_signature(ref, fn)
            funcs.append(RewardFunc(getattr(fn, "__name__", ref.rsplit(":", 1)[1]), fn, weight))
    names = [f.name for f in funcs]
    if len(set(names)) != len(names):
        raise UserError(f"reward.funcs: two functions are named '{next(n for n in names if names.count(n) > 1)}'; "
                        f"metrics are keyed by name, so give them different names")
    return funcs


def _no_call(**_: Any) -> list[float]:
    raise AssertionError("built-in tasks are scored by unift.protocol")  # never called


def _resolve(ref: str, config_dir: Path | None) -> Callable[..., Any]:
    where, _, attr = ref.rpartition(":")
    if where.endswith(".py") or "/" in where:
        module = _load_file(ref, where, config_dir)
    else:
        try:
            module = importlib.import_module(where)
        except Exception as exc:  # user code: anything can go wrong while importing
            raise UserError(f"reward.funcs: cannot import {ref} ({type(exc).__name__}: {one_line(exc)})") from None
    fn = getattr(module, attr, None)
    if fn is None:
        raise UserError(f"reward.funcs: {ref}: {where} has no attribute '{attr}'")
    if not callable(fn):
        raise UserError(f"reward.funcs: {ref} is not callable (it is a {type(fn).__name__})")
    return fn


def _load_file(ref: str, where: str, config_dir: Path | None) -> Any:
    candidates = [Path(where)] if Path(where).is_absolute() else \
        [p for p in ((config_dir / where) if config_dir else None, Path(where)) if p is not None]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise UserError(f"reward.funcs: cannot import {ref}: no file {where}"
                        + (f" (looked in {config_dir} and the working directory)" if config_dir else ""))
    name = f"unift_user_reward_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up by name
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # user code
        del sys.modules[name]
        raise UserError(f"reward.funcs: cannot import {ref} ({type(exc).__name__}: {one_line(exc)})") from None
    return module


def check_signature(ref: str, fn: Callable[..., Any]) -> None:
    """TRL calls with keywords prompts, completions, completion_ids and every column: the function
    must take them (a **kwargs catches the ones it does not name)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # a builtin without a signature: it is tried at the first call
    params = sig.parameters.values()
    if not any(p.kind is p.VAR_KEYWORD for p in params):
        raise UserError(f"reward.funcs: {ref} must accept **kwargs (TRL's signature: f(prompts, completions, "
                        f"completion_ids, **kwargs); every dataset column is passed as a keyword)")
    try:
        sig.bind(**{k: [] for k in PROBE_KEYWORDS})
    except TypeError as exc:
        raise UserError(f"reward.funcs: {ref} cannot be called as f(prompts=..., completions=..., **columns) "
                        f"({exc})") from None


def call_reward(f: RewardFunc, batch: dict[str, Any], n: int, step: int, timeout_s: float) -> list[float | None]:
    """Scores of one function for a batch of n completions, checked (one-line errors)."""
    mine = None
    try:
        with time_limit(timeout_s) as mine:
            out = f.fn(**batch)
    except Deadline as exc:
        if exc.limit is not mine:
            raise
        raise UserError(f"reward {f.name} did not return within reward.timeout_s={timeout_s:g} s at step {step} "
                        f"({n} completions): make it faster or raise the limit") from None
    except UserError:
        raise
    except Exception as exc:  # user code
        row = _first_failing_row(f, batch, n, timeout_s)
        at = f" on row {row}" if row is not None else ""
        raise UserError(f"reward {f.name} failed at step {step}{at}: {type(exc).__name__}: {one_line(exc)}") from None
    return check_scores(f.name, out, n, step)


def _first_failing_row(f: RewardFunc, batch: dict[str, Any], n: int, timeout_s: float) -> int | None:
    for i in range(n):
        one = {k: ([v[i]] if isinstance(v, list) and len(v) == n else v) for k, v in batch.items()}
        mine = None
        try:
            with time_limit(timeout_s) as mine:
                f.fn(**one)
        except Deadline as exc:
            if exc.limit is not mine:
                raise
            return i
        except Exception:  # user code: this is the row
            return i
    return None


def check_scores(name: str, out: Any, n: int, step: int) -> list[float | None]:
    try:
        scores = list(out)
    except TypeError:
        raise UserError(f"reward {name} returned {type(out).__name__} at step {step}: return a list of {n} floats "
                        f"(or None for a row it does not score)") from None
    if len(scores) != n:
        raise UserError(f"reward {name} returned {len(scores)} scores for {n} completions at step {step}")
    checked: list[float | None] = []
    for i, s in enumerate(scores):
        if s is None:
            checked.append(None)
            continue
        if isinstance(s, bool) or not isinstance(s, numbers.Real):
            raise UserError(f"reward {name} returned {s!r} for row {i} at step {step}: scores must be numbers or None")
        if not math.isfinite(float(s)):
            raise UserError(f"reward {name} returned {float(s)} for row {i} at step {step}: scores must be finite")
        checked.append(float(s))
    return checked


def combine(per_func: dict[str, list[float | None]], funcs: list[RewardFunc], n: int) -> tuple[list[float], int]:
    """Weighted sum over the functions that scored each row; (totals [n], rows no function scored)."""
    totals, unscored = [], 0
    for i in range(n):
        given = [(f.weight, per_func[f.name][i]) for f in funcs if per_func[f.name][i] is not None]
        unscored += not given
        totals.append(sum(w * s for w, s in given))
    return totals, unscored
