"""What every training loop does around its steps: resume, log, evaluate, checkpoint, finish.

The loops (loop.py for SFT/DFT, rl_loop.py for RFT/UFT/R3) keep their step visible and call
`Run` for the bookkeeping, so both resume, log and save the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from unift.config import Config, to_dict
from unift.data.batching import Cursor
from unift.errors import UserError
from unift.train import checkpoint as ckpt
from unift.train.metrics import MetricsLogger
from unift.train.setup import PeriodicEval


class Run:
    def __init__(self, cfg: Config, output_dir: Path, model, tokenizer, optimizer, scheduler, total: int, amp):
        self.cfg, self.output_dir, self.total = cfg, output_dir, total
        self.model, self.tokenizer, self.optimizer, self.scheduler = model, tokenizer, optimizer, scheduler
        self.config_yaml = yaml.safe_dump(to_dict(cfg), sort_keys=False)
        self.periodic = PeriodicEval(cfg, tokenizer, amp)
        self.logger: MetricsLogger | None = None

    def start(self) -> tuple[int, Cursor, dict[str, Any]]:
        """Resume from the latest good checkpoint if asked; open the metric sinks.

        Returns (step, data cursor, the saved trainer state or {})."""
        from unift.lora import restore_weights

        step, cursor, state = 0, Cursor(), {}
        resume_from = ckpt.latest_checkpoint(self.output_dir) if self.cfg.resume else None
        if resume_from is not None:
            restore_weights(self.model, resume_from / "model")  # the adapter alone under LoRA
            state = ckpt.load_training_state(resume_from, self.optimizer, self.scheduler)
            step, cursor = state["step"], Cursor(**state["cursor"])
            print(f"resumed from {resume_from} at step {step}")
        (self.output_dir / "config.yaml").write_text(self.config_yaml)
        self.logger = MetricsLogger(self.output_dir, self.total, step, self.cfg.log.tensorboard, self.cfg.log.wandb,
                                    self.cfg.log.progress, run_name=self.output_dir.name, config=to_dict(self.cfg))
        if step == 0 and self.periodic.examples:  # the starting point of the learning curve
            self.logger.log(0, self.periodic(self.model))
        return step, cursor, state

    def end_step(self, step: int, cursor: Cursor, metrics: dict[str, Any], postfix: dict[str, Any],
                 extra_state: dict[str, Any] | None = None) -> None:
        """After optimizer step `step`: held-out eval when due, log, progress bar, checkpoint when due."""
        if self.periodic.due(step, self.total):
            metrics.update(self.periodic(self.model))
        if step % self.cfg.log.every == 0 or step == self.total:
            self.logger.log(step, metrics)
        self.logger.progress(step, postfix)
        every = self.cfg.checkpoint.every
        if every and step % every == 0 and step < self.total:
            self.save(step, cursor, extra_state)

    def save(self, step: int, cursor: Cursor, extra_state: dict[str, Any] | None = None) -> None:
        state = {"step": step, "cursor": cursor.as_dict(), "total_steps": self.total, **(extra_state or {})}
        ckpt.save_checkpoint(self.output_dir, step, self.model, self.tokenizer, self.optimizer, self.scheduler,
                             state, self.config_yaml, self.cfg.checkpoint.keep_last)

    def interrupted(self, step: int, cursor: Cursor, extra_state: dict[str, Any] | None = None) -> UserError:
        """Ctrl-C: save a resumable checkpoint, close the sinks, return the error to raise."""
        self.save(step, cursor, extra_state)
        self.logger.close()
        return UserError(f"interrupted at step {step}; checkpoint saved, continue with resume=true")

    def finish(self, step: int, cursor: Cursor, extra_state: dict[str, Any] | None = None) -> Path:
        """Last checkpoint, close the sinks, write the final Hugging Face model."""
        from unift.models import save_model

        self.save(step, cursor, extra_state)
        self.logger.close()
        final = self.output_dir / "final"
        save_model(self.model, self.tokenizer, final)
        return final
