"""What every training loop does around its steps: resume, log, evaluate, checkpoint, finish.

The loops (loop.py for SFT/DFT, rl_loop.py for RFT/UFT/R3) keep their step visible and call
`Run` for the bookkeeping, so both resume, log and save the same way.

Two ways a run stops early, both at the end of a step (where weights, optimizer, data cursor
and RNG agree) and both as a one-line `UserError`:
- SIGINT (Ctrl-C) or SIGTERM: the step in progress is finished, a checkpoint is saved and the
  logs are closed; a second signal stops at once without saving.
- `train.max_bad_steps` steps in a row whose update was skipped for a non-finite loss or
  gradient: nothing more is saved, so the newest checkpoint holds the last good weights.
Every ending writes OUTPUT_DIR/summary.json (status, step, checkpoint, final model, message).
"""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from typing import Any

import yaml

from unift.config import Config, to_dict
from unift.data.batching import Cursor
from unift.errors import UserError
from unift.files import write_atomic
from unift.models import save_model
from unift.train import checkpoint as ckpt
from unift.train.distributed import current_world
from unift.train.metrics import MetricsLogger
from unift.train.setup import PeriodicEval
from unift.weights import full_copy, is_sharded


class Run:
    def __init__(self, cfg: Config, output_dir: Path, model, tokenizer, optimizer, scheduler, total: int, amp):
        self.cfg, self.output_dir, self.total = cfg, output_dir, total
        self.model, self.tokenizer, self.optimizer, self.scheduler = model, tokenizer, optimizer, scheduler
        self.config_yaml = yaml.safe_dump(to_dict(cfg), sort_keys=False)
        self.periodic = PeriodicEval(cfg, tokenizer, amp)
        self.logger: MetricsLogger | None = None
        self.bad_steps = 0            # consecutive steps whose update was skipped (non-finite)
        self.saved_step = -1          # step of the newest checkpoint this process wrote
        self.last_checkpoint: Path | None = None
        self.stop_signal: str | None = None
        self._old_handlers: dict[int, Any] = {}
        self.world = current_world()  # several processes: only rank 0 logs, evaluates and writes

    def start(self) -> tuple[int, Cursor, dict[str, Any]]:
        """Resume from the latest good checkpoint if asked; open the metric sinks.

        Returns (step, data cursor, the saved trainer state or {})."""
        step, cursor, state = 0, Cursor(), {}
        # rank 0 reads the checksums (and warns of damage) once; every rank loads the one it chose
        found = ckpt.latest_checkpoint(self.output_dir) if self.cfg.resume and self.world.is_main else None
        found = self.world.gather([str(found) if found else ""])[0]
        resume_from = Path(found) if found else None
        if self.world.is_main:
            ckpt.remove_leftovers(self.output_dir)
        if resume_from is not None:
            state = ckpt.load_checkpoint(resume_from, self.model, self.optimizer, self.scheduler)
            try:
                step, cursor = state["step"], Cursor(**state["cursor"])
            except TypeError:  # keys of another Cursor
                raise UserError(f"checkpoint {resume_from}: its trainer_state.json cursor "
                                f"{state['cursor']} is not a data position; resume another checkpoint") from None
            self.bad_steps = int(state.get("bad_steps", 0))
            self.last_checkpoint, self.saved_step = resume_from, step
            if self.world.is_main:
                print(f"resumed from {resume_from} at step {step}")
        initial = self._evaluate() if step == 0 and self.periodic.examples else None  # the curve's start
        self._catch_signals()
        if not self.world.is_main:
            self.logger = _SilentLogger()
            return step, cursor, state
        (self.output_dir / "config.yaml").write_text(self.config_yaml)
        self.logger = MetricsLogger(self.output_dir, self.total, step, self.cfg.log.tensorboard, self.cfg.log.wandb,
                                    self.cfg.log.progress, run_name=self.output_dir.name, config=to_dict(self.cfg))
        if initial is not None:
            self.logger.log(0, initial)
        return step, cursor, state

    def end_step(self, step: int, cursor: Cursor, metrics: dict[str, Any], postfix: dict[str, Any],
                 extra_state: dict[str, Any] | None = None) -> None:
        """After optimizer step `step`: held-out eval when due, log, progress bar, the non-finite
        streak check, checkpoint when due, and a stop when a signal asked for one."""
        if self.periodic.due(step, self.total):
            metrics.update(self._evaluate())
        if step % self.cfg.log.every == 0 or step == self.total:
            self.logger.log(step, metrics)
        self.logger.progress(step, postfix)
        self._count_bad_step(step, bool(metrics.get("skipped_nonfinite")))
        every = self.cfg.checkpoint.every
        if every and step % every == 0 and step < self.total:
            self.save(step, cursor, extra_state)
        stop = bool(self.stop_signal)
        if self.world.distributed:  # every rank stops after the same step
            stop = self.world.sum([float(stop)])[0] > 0
            self.stop_signal = self.stop_signal or ("SIGINT" if stop else None)
        if stop and step < self.total:
            raise self.interrupted(step, cursor, extra_state)

    def _evaluate(self) -> dict[str, float]:
        """Held-out greedy pass@1 on rank 0 (the others return {}; FSDP2: they help gather the weights)."""
        model = full_copy(self.model, main_only=True) if is_sharded(self.model) else self.model
        return self.periodic(model) if self.world.is_main else {}

    def save(self, step: int, cursor: Cursor, extra_state: dict[str, Any] | None = None) -> None:
        if step == self.saved_step:  # e.g. interrupted right after a periodic checkpoint
            return
        state = {"step": step, "cursor": cursor.as_dict(), "total_steps": self.total, "bad_steps": self.bad_steps,
                 **(extra_state or {})}
        if is_sharded(self.model):  # FSDP2: every rank writes its shards
            self.last_checkpoint = ckpt.save_sharded_checkpoint(self.output_dir, step, self.model, self.tokenizer,
                                                                self.optimizer, self.scheduler, state,
                                                                self.config_yaml, self.cfg.checkpoint.keep_last)
        elif self.world.is_main:  # the replicas are identical: one copy is written
            self.last_checkpoint = ckpt.save_checkpoint(self.output_dir, step, self.model, self.tokenizer,
                                                        self.optimizer, self.scheduler, state, self.config_yaml,
                                                        self.cfg.checkpoint.keep_last)
        self.world.barrier()
        self.saved_step = step

    def interrupted(self, step: int, cursor: Cursor, extra_state: dict[str, Any] | None = None) -> UserError:
        """Ctrl-C: save a resumable checkpoint, close the sinks, return the error to raise."""
        self.save(step, cursor, extra_state)
        message = f"interrupted at step {step}; checkpoint saved, continue with resume=true"
        self._close("interrupted", step, message)
        return UserError(message)

    def finish(self, step: int, cursor: Cursor, extra_state: dict[str, Any] | None = None) -> Path:
        """Last checkpoint, close the sinks, write the final Hugging Face model."""
        self.save(step, cursor, extra_state)
        final = self.output_dir / "final"
        model = full_copy(self.model, main_only=True) if is_sharded(self.model) else self.model
        if self.world.is_main:
            save_model(model, self.tokenizer, final)
        self.world.barrier()
        self._close("finished", step, f"final model: {final}", final)
        return final

    # ------------------------------------------------------------------ early stops

    def _count_bad_step(self, step: int, bad: bool) -> None:
        """Stop after train.max_bad_steps consecutive steps whose update was skipped."""
        self.bad_steps = self.bad_steps + 1 if bad else 0
        limit = self.cfg.train.max_bad_steps
        if self.bad_steps < limit:
            return
        last = self.last_checkpoint
        then = f"the last checkpoint ({last.name}) is kept; lower train.lr or check the data, then resume=true" \
            if last else "no checkpoint was saved; lower train.lr or check the data and start again"
        message = (f"step {step}: non-finite loss or gradient in {self.bad_steps} steps in a row "
                   f"(train.max_bad_steps={limit}), run stopped; {then}")
        self._close("stopped", step, message)
        raise UserError(message)

    def _catch_signals(self) -> None:
        """SIGINT/SIGTERM finish the current step, then save and stop (see the module docstring)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old_handlers[sig] = signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if self.stop_signal is not None:
            raise UserError(f"{name} received twice: stopped at once without saving; resume=true continues "
                            f"from the last checkpoint")
        self.stop_signal = name
        print(f"\n{name}: stopping after the current step (send it again to stop at once without saving)",
              flush=True)

    def _close(self, status: str, step: int, message: str, final: Path | None = None) -> None:
        """Close the metric sinks, restore the signal handlers, write summary.json."""
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)
        self._old_handlers.clear()
        if self.logger is not None:
            self.logger.close()
        if not self.world.is_main:
            return
        last = self.last_checkpoint
        summary = {"status": status, "step": step, "total_steps": self.total,
                   "checkpoint": str(last) if last else None, "final_model": str(final) if final else None,
                   "message": message}
        write_atomic(self.output_dir / "summary.json", json.dumps(summary, indent=1) + "\n")


class _SilentLogger:
    """The metric sinks of ranks other than 0: nothing is written."""

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        pass

    def progress(self, step: int, postfix: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass
