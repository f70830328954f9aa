"""Metric sinks: JSONL (always), TensorBoard and Weights & Biases (optional), a progress bar.

`metrics.jsonl` holds one JSON object per logged step. On resume, lines past the resumed step
are dropped so the file reads as one uninterrupted run.
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
        self._truncate_after(start_step)
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

    def _truncate_after(self, step: int) -> None:
        if not self.path.exists():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    kept.append(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash
        write_atomic(self.path, "".join(k + "\n" for k in kept))  # a crash here keeps the old file

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        record = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                    self.tb.add_scalar(key, value, step)
        if self.wandb is not None:  # scalars only (example_ids stay in the JSONL file)
            self.wandb.log({k: v for k, v in record.items() if not isinstance(v, (list, dict))}, step=step)

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


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return value
