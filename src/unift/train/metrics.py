"""Metric sinks: JSONL (always), TensorBoard and Weights & Biases (optional), a progress bar.

`metrics.jsonl` holds one JSON object per logged step. An RL step may also hand over a few of
its completions (the metric `completions`: a list of records): they go to `completions.jsonl`
(one line per completion, with its step), to TensorBoard as a text table and to W&B as a table.
On resume, lines past the resumed step are dropped from both files, so each reads as one
uninterrupted run with no step twice.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from unift.errors import UserError
from unift.files import write_atomic


class MetricsLogger:
    def __init__(self, output_dir: Path, total_steps: int, start_step: int = 0, tensorboard: bool = True,
                 wandb: bool = False, progress: bool = True, run_name: str = "", config: dict | None = None):
        self.path = output_dir / "metrics.jsonl"
        self.completions_path = output_dir / "completions.jsonl"
        for path in (self.path, self.completions_path):
            _truncate_after(path, start_step)
        self.file = self.path.open("a", encoding="utf-8")
        self.tb = None
        if tensorboard:
            # TensorBoard loads only when log.tensorboard is on
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(output_dir / "tb"), purge_step=start_step + 1 if start_step else None)
        self.wandb = None
        if wandb:
            try:
                import wandb as wandb_module  # the optional wandb extra, only with log.wandb
            except ImportError:
                raise UserError("log.wandb=true needs the wandb package (pip install wandb)") from None
            self.wandb = wandb_module.init(name=run_name or None, config=config, resume="allow")
        self.bar = None
        if progress:
            # the progress bar loads only when log.progress is on
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True)
        self.started = time.time()

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        metrics = dict(metrics)
        samples = metrics.pop("completions", None)
        if samples:
            self.log_completions(step, samples)
        record = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                    self.tb.add_scalar(key, value, step)
        if self.wandb is not None:  # scalars only (example_ids stay in the JSONL file)
            self.wandb.log({k: v for k, v in record.items() if not isinstance(v, (list, dict))}, step=step)

    def log_completions(self, step: int, samples: list[dict[str, Any]]) -> None:
        with self.completions_path.open("a", encoding="utf-8") as fh:
            fh.write("".join(json.dumps({"step": step, **s}, ensure_ascii=False) + "\n" for s in samples))
        columns = list(samples[0])
        if self.tb is not None:
            head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
            rows = ["| " + " | ".join(_cell(s.get(c)) for c in columns) + " |" for s in samples]
            self.tb.add_text("completions", head + "\n".join(rows), step)
        if self.wandb is not None:
            # the optional wandb extra: already imported when self.wandb is set
            import wandb as wandb_module

            table = wandb_module.Table(columns=columns, data=[[json.dumps(s.get(c)) if isinstance(s.get(c), dict)
                                                               else s.get(c) for c in columns] for s in samples])
            self.wandb.log({"completions": table}, step=step)

    def progress(self, step: int, postfix: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.n = step
            self.bar.set_postfix({k: f"{v:.4g}" if isinstance(v, float) else v for k, v in postfix.items()},
                                 refresh=True)

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
        if self.bar is not None:
            self.bar.close()


def _truncate_after(path: Path, step: int) -> None:
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                kept.append(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash
    write_atomic(path, "".join(k + "\n" for k in kept))  # a crash here keeps the old file


def _cell(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if isinstance(value, dict) else str(value)
    return text.replace("|", "\\|").replace("\n", "⏎")


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return value
