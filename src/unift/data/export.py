"""Write `Example`s as JSONL in TRL's prompt-completion format, plus UFT columns.

Each line: {"prompt", "completion", "hint" (solution pieces), "ground_truth", "data_source",
"task"}. `unift train` and `unift eval` read it back unchanged; TRL's trainers read the
prompt/completion columns and pass the others to reward functions. Written atomically.
"""

from __future__ import annotations

import json
from pathlib import Path

from unift.errors import UserError
from unift.files import write_atomic
from unift.tasks.base import Example


def example_to_row(ex: Example) -> dict:
    return {"prompt": ex.prompt, "completion": ex.completion, "hint": list(ex.pieces),
            "ground_truth": ex.ground_truth, "data_source": ex.data_source, "task": ex.task}


def write_jsonl(examples: list[Example], path: Path) -> None:
    if path.parent and not path.parent.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create directory {path.parent} ({exc.strerror})") from None
    try:
        write_atomic(path, "".join(json.dumps(example_to_row(ex), ensure_ascii=False) + "\n" for ex in examples))
    except OSError as exc:
        raise UserError(f"cannot write {path} ({exc.strerror})") from None
