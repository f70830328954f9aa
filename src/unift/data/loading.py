"""Load training/evaluation rows from files into `Example`s.

Accepted sources
- the official UFT data in verl parquet format, exactly as published: columns `prompt` (one
  chat message whose content is the full TinyZero prompt), `hint` (solution pieces),
  `answer` (reference response), `reward_model.ground_truth`, `data_source`;
- TRL data set formats, as JSONL, JSON, Parquet, a directory written by
  `datasets.save_to_disk` or a hub data set id: prompt-only `{"prompt"}`, prompt-completion
  `{"prompt", "completion"}` (plain text or conversational message lists) and conversational
  `{"messages"}`; optional `hint` (or `pieces`) list of solution pieces, `ground_truth` (or
  `reward_model.ground_truth`), `data_source`, `task`;
- the output of `unift data` (prompt-completion JSONL with hint and ground_truth).

Every problem is reported as one line naming the file and the row.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from unift.errors import UserError
from unift.tasks import get_task, task_for_data_source
from unift.tasks.base import Example

_SUFFIXES = (".parquet", ".jsonl", ".json")


def _read_rows(source: str) -> Iterator[tuple[int, dict]]:
    """Yield (row number, row dict) from a file, a saved data set or a hub id."""
    try:
        yield from _read_rows_unchecked(source)
    except UnicodeDecodeError:
        raise UserError(f"{source}: not UTF-8 text; data files must be UTF-8 JSON lines, JSON or Parquet") from None
    except OSError as exc:
        raise UserError(f"{source}: cannot read ({exc.strerror or exc})") from None


def _read_rows_unchecked(source: str) -> Iterator[tuple[int, dict]]:
    path = Path(source)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".parquet":
            # pyarrow loads only for parquet files
            import pyarrow.parquet as pq

            try:
                table = pq.read_table(path)
            except Exception as exc:  # pyarrow raises several types for damaged files
                raise UserError(f"{path}: cannot read as Parquet ({str(exc).splitlines()[0]})") from None
            yield from enumerate(table.to_pylist())
        elif suffix == ".jsonl":
            with path.open(encoding="utf-8") as fh:
                for number, line in enumerate(fh, start=1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise UserError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
                    if not isinstance(row, dict):
                        raise UserError(f"{path}:{number}: each line must be a JSON object")
                    yield number, row
        elif suffix == ".json":
            try:
                rows = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
            if not isinstance(rows, list):
                raise UserError(f"{path}: a .json data file must hold a list of objects")
            for number, row in enumerate(rows):
                if not isinstance(row, dict):
                    raise UserError(f"{path}: row {number} is not a JSON object")
                yield number, row
        else:
            raise UserError(f"{path}: unsupported data file type '{suffix}' (use {', '.join(_SUFFIXES)})")
        return
    if not path.exists() and _looks_local(source):  # reported at once, without trying to reach a hub first
        raise UserError(f"data file {source} does not exist")
    if path.is_dir() or "/" not in source or source.count("/") == 1:
        yield from _read_dataset(source, path)
        return
    raise UserError(f"data file {source} does not exist")


def _read_dataset(source: str, path: Path) -> Iterator[tuple[int, dict]]:
    """A directory saved by `datasets`, or a hub data set id."""
    try:
        import datasets  # optional: only needed for saved data sets and hub ids
    except ImportError:
        if path.is_dir():
            raise UserError(f"{path}: reading a saved data set needs the datasets package "
                            f"(pip install datasets)") from None
        raise UserError(f"data '{source}' does not exist (no such file)") from None
    try:
        if path.is_dir():
            ds = datasets.load_from_disk(str(path))
        else:
            ds = datasets.load_dataset(source, split="train")
    except Exception:
        raise UserError(f"data '{source}' does not exist: not a file, a saved data set or a "
                        f"reachable hub data set") from None
    if isinstance(ds, datasets.DatasetDict):
        ds = ds["train"] if "train" in ds else next(iter(ds.values()))
    yield from enumerate(ds)


def _looks_local(source: str) -> bool:
    """A file suffix, or a path form no hub id has (./x, ../x, /x, a/b/c)."""
    suffix = Path(source).suffix.lower()
    return suffix in _SUFFIXES + (".csv", ".txt", ".arrow", ".gz") or source.startswith(("./", "../", "/", "~")) \
        or source.count("/") > 1


def _message_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(m, dict) and "content" in m for m in value)


def _text_of(messages: list[dict]) -> str:
    return "".join(str(m.get("content", "")) for m in messages)


def row_to_example(row: dict, where: str, default_source: str = "") -> Example:
    """Turn one row of any accepted format into an `Example` (UserError on a malformed row)."""
    prompt, completion, extra = _prompt_and_completion(row, where)
    task = str(row.get("task") or "")
    if not task and row.get("data_source"):
        try:
            task = task_for_data_source(str(row["data_source"]))
        except UserError:
            task = ""  # fine for SFT/DFT; evaluation and RL ask for data.task
    data_source = str(row.get("data_source") or task or default_source)
    # every other column, for user reward functions (TRL passes them as keyword lists)
    extra["columns"] = {k: v for k, v in row.items() if k not in ("prompt", "completion", "messages")}
    return Example(prompt=prompt, completion=completion, pieces=_pieces(row, where), ground_truth=_ground_truth(row),
                   data_source=data_source, task=task, extra=extra)


def _prompt_and_completion(row: dict, where: str) -> tuple[Any, str | None, dict[str, Any]]:
    """(prompt: text or messages, reference completion or None, extra) of a TRL or verl row."""
    completion: str | None = None
    extra: dict[str, Any] = {}
    if "messages" in row and "prompt" not in row:
        messages = row["messages"]
        if not _message_list(messages) or not messages:
            raise UserError(f"{where}: 'messages' must be a non-empty list of {{role, content}} objects")
        if messages[-1].get("role") == "assistant":
            prompt: Any = messages[:-1]
            completion = str(messages[-1]["content"])
        else:
            prompt = messages
        if not prompt:
            raise UserError(f"{where}: 'messages' holds no prompt before the assistant turn")
        return prompt, completion, extra
    if "prompt" not in row:
        found = ", ".join(sorted(map(str, row))) or "none"
        raise UserError(f"{where}: no 'prompt' or 'messages' column (found: {found}); "
                        f"expected TRL format (prompt/completion or messages) or UFT verl parquet")
    raw = row["prompt"]
    if isinstance(raw, str):
        prompt = raw
    elif _message_list(raw) and raw:
        # verl/UFT parquet: one user message whose content is the whole TinyZero prompt.
        verl = len(raw) == 1 and ("reward_model" in row or "question" in row)
        prompt = str(raw[0]["content"]) if verl else list(raw)
        extra["verl"] = verl
    else:
        raise UserError(f"{where}: 'prompt' must be a string or a list of {{role, content}} messages")
    if "completion" in row and row["completion"] is not None:
        comp = row["completion"]
        if not (isinstance(comp, str) or _message_list(comp)):
            raise UserError(f"{where}: 'completion' must be a string or a list of {{role, content}} messages")
        completion = comp if isinstance(comp, str) else _text_of(comp)
    elif isinstance(row.get("answer"), str) and ("reward_model" in row or "hint" in row):
        completion = row["answer"]  # verl/UFT: full reference response
    return prompt, completion, extra


def _pieces(row: dict, where: str) -> list[str]:
    """The reference solution pieces (column `hint`, or `pieces`), empty ones dropped."""
    pieces = row.get("hint", row.get("pieces"))
    if pieces is None:
        pieces = []
    if isinstance(pieces, str):
        pieces = [pieces]
    if not isinstance(pieces, list) or not all(isinstance(p, str) for p in pieces):
        raise UserError(f"{where}: 'hint' must be a list of strings (solution pieces)")
    return [p for p in pieces if p != ""]


def _ground_truth(row: dict) -> Any:
    """`ground_truth`, else verl's `reward_model.ground_truth` (a dict loses its null fields)."""
    ground_truth = row.get("ground_truth")
    reward_model = row.get("reward_model")
    if ground_truth is None and isinstance(reward_model, dict):
        ground_truth = reward_model.get("ground_truth")
    if isinstance(ground_truth, dict):
        ground_truth = {k: v for k, v in ground_truth.items() if v is not None}
    return ground_truth


def row_name(ex: Example, fallback: str) -> str:
    """'FILE row N' numbered as the loader numbers rows (line number in JSONL, index otherwise)."""
    return ex.extra.get("where", fallback)


def load_examples(source: str, *, limit: int = 0, task: str = "") -> list[Example]:
    """Load all rows of `source` as Examples; `task` overrides each row's task."""
    if not source:
        raise UserError("no data given")
    if task:
        get_task(task)  # unknown names fail here, with a suggestion
    default_source = task or Path(source).stem.split(".")[0]
    examples = []
    for number, row in _read_rows(source):
        ex = row_to_example(row, f"{source} row {number}", default_source)
        ex.extra["where"] = f"{source} row {number}"
        if task:
            ex.task = task
        examples.append(ex)
        if limit and len(examples) >= limit:
            break
    if not examples:
        raise UserError(f"data '{source}' holds no rows")
    return examples
