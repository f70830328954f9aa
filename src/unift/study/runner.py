"""`unift compare CONFIG [--resume]`: run a study (unift.study.spec) one run at a time, in pieces.

Order: seed by seed (a whole first-seed comparison exists early), methods in config order within
a seed, each after the run it starts from. A method with a sweep first trains every candidate
with the first seed, scores them on the validation set and keeps the best (ties: the first
listed); its other seeds and the runs that start from it use that candidate.

Resumable: with `--resume` a finished run is reused only if the config it saved equals the one
the study would run now (else a one-line error naming the key), a half-finished run continues
from its newest checkpoint (the study turns on `checkpoint_every`), and an evaluation already on
disk for the same model weights and evaluation set is read back, not redone. A finished run keeps its
final model, metrics, config and a DONE record (the weights' id); its resume checkpoints are deleted.

In pieces across machines: the weights need not travel. A run directory holding config.yaml,
metrics.jsonl and done.json (no final/), with its evaluations, counts as finished (what
scripts/copy_study_results.sh commits and scripts/restore_study_results.sh puts back); only when a
later run starts from it, or an evaluation of it is missing, is it trained again. Without `--resume`
an output_dir that already holds runs is an error, so nothing is overwritten by accident.

Layout of output_dir: study.yaml, results.json, report.md, accuracy.png, reward.png, and (in runs_dir,
which is output_dir unless set) LABEL/seedS/ (a normal run directory) and eval/SET/LABEL/seedS/
(results.json, results.md, records.jsonl). Studies that share a runs_dir reuse each other's runs
and evaluations: a run of the same label must have the same config, an evaluation set of the
same name the same definition (else a one-line error before any model loads).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from unift.config import OFFLINE_METHODS, Config, to_dict
from unift.data.loading import load_examples
from unift.device import autocast_dtype, pick_device
from unift.errors import UserError
from unift.evaluate import evaluate_model, write_report
from unift.files import create_dir, sha256, write_atomic
from unift.scoring import Scorer
from unift.study.report import DONE, write_study_report
from unift.study.spec import EvalSet, Method, Study, read_study
from unift.tasks.base import Example
from unift.train.checkpoint import latest_checkpoint
from unift.train.loop import train
from unift.train.rl_loop import train_rl

# may differ between a run's first start and its resumption without changing what it trains: resume is
# set by the runner, a run directory moved into place keeps what it trained, and checkpointing and the
# log sinks do not touch the weights
IGNORED_KEYS = ("resume", "output_dir", "checkpoint.every", "checkpoint.keep_last", "log.progress",
                "log.tensorboard", "log.wandb")


def run_study(path: str, overrides: list[str] | None = None, resume: bool = False,
              only: list[str] | None = None) -> dict[str, Any]:
    """Run (or continue) the study at `path`; `only`: these methods this time, with the runs they start
    from (a piece of a long study); the report covers every method whose results are on disk."""
    study = read_study(path, overrides)
    selected = with_inits(study, only, path) if only else list(study.methods)
    for m in study.methods.values():  # what `auto` means here is saved with each run (see resolve_precision)
        for cfg in m.configs.values():
            cfg.train.precision = resolve_precision(cfg.train.precision, cfg.train.device)
    check_output_dir(study, resume)
    eval_data = {name: load_eval_set(name, s) for name, s in _all_sets(study).items()}
    create_dir(study.out)
    write_atomic(study.out / "study.yaml", yaml.safe_dump(dataclasses.asdict(study.cfg), sort_keys=False))
    runner = StudyRunner(study, eval_data)
    for m in study.methods.values():  # methods left out of this piece: reported from what is on disk
        if m.name not in selected:
            runner.chosen_on_disk(m)
    for seed in study.cfg.seeds:
        for method in study.methods.values():
            if method.name in selected:
                runner.run_method(method, seed)
    return runner.report()


def with_inits(study: Study, only: list[str], path: str) -> list[str]:
    """The methods named in `only` and, recursively, the methods they start from (`init:`)."""
    unknown = [name for name in only if name not in study.methods]
    if unknown:
        raise UserError(f"--methods: {unknown[0]!r} is not a method of {path} "
                        f"(its methods: {', '.join(study.methods)})")
    selected, todo = set(), list(only)
    while todo:
        name = todo.pop()
        if name not in selected:
            selected.add(name)
            todo += [study.methods[name].init] if study.methods[name].init else []
    return [name for name in study.methods if name in selected]


def _all_sets(study: Study) -> dict[str, EvalSet]:
    extra = {"validation": study.cfg.validation} if study.cfg.validation.data else {}
    return {**study.eval_sets, **extra}


def check_output_dir(study: Study, resume: bool) -> None:
    """Before any model loads: no silent overwrite, and no run resumed under another config."""
    runs = [cfg for m in study.methods.values() for cfg in m.configs.values()]
    started = [cfg for cfg in runs if (Path(cfg.output_dir) / "config.yaml").exists()]
    if started and not resume:
        raise UserError(f"{study.runs} already holds runs of a study (e.g. {started[0].output_dir}): pass --resume "
                        f"to continue it (or to reuse them), or choose another output_dir")
    for cfg in started:
        check_same_config(cfg, Path(cfg.output_dir) / "config.yaml", compare_model=False)
    for name, s in _all_sets(study).items():
        check_same_eval_set(study.runs / "eval" / name, name, vars(s))


def check_same_eval_set(where: Path, name: str, definition: dict[str, Any]) -> None:
    """Evaluations on disk under `where` were made on the set `definition` describes (a study that shares
    runs_dir with another, or one whose set changed, would otherwise overwrite or mix them)."""
    for path in sorted(where.glob("*/seed*/results.json")):
        try:
            was = (json.loads(path.read_text()).get("study_key") or {}).get("set")
        except (OSError, json.JSONDecodeError):
            continue  # a torn write: that evaluation is redone
        if was is not None and was != definition:
            key = next(k for k in sorted({*was, *definition}) if was.get(k) != definition.get(k))
            raise UserError(f"{path.parent} was evaluated on another '{name}' set ({key}: {was.get(key)!r} there, "
                            f"{definition.get(key)!r} now): restore its definition, or give this set another name")


def resolve_precision(precision: str, device: str) -> str:
    """train.precision=auto as this machine resolves it: bf16 on a GPU or a CPU with native bf16
    (AVX512-BF16, AMX), fp32 elsewhere. A study resumed on another kind of machine would otherwise
    mix bf16 and fp32 runs under one unchanged config; with the resolved value saved, resuming there
    is a config difference (a one-line error) instead."""
    if precision != "auto":
        return precision
    return "bf16" if autocast_dtype("auto", pick_device(device)) == torch.bfloat16 else "fp32"


def check_same_config(cfg: Config, saved: Path, compare_model: bool = True) -> None:
    try:
        old = yaml.safe_load(saved.read_text()) or {}
    except (OSError, yaml.YAMLError):
        raise UserError(f"{saved} cannot be read: remove {saved.parent} to train that run again") from None
    ignored = IGNORED_KEYS + (() if compare_model else ("model",))
    defaults = _flat(to_dict(Config()))
    for key, (was, now) in _differences(old, to_dict(cfg)).items():
        if was is None and key in defaults and defaults[key] == now:
            continue  # a key an older unift did not have, left at its default: the same run
        if key == "train.precision" and was == "auto":
            continue  # saved by an older unift, before precision was resolved per machine
        if key == "train.precision":
            raise UserError(f"{saved.parent} was trained with train.precision={was} and this machine resolves "
                            f"auto to {now} (native bf16: {now == 'bf16'}): resume on the kind of machine it "
                            f"started on, or set base.train.precision and use another output_dir")
        if key not in ignored:
            raise UserError(f"{saved.parent} was made by another config ({key}: {was!r} there, {now!r} now): "
                            f"restore the study config, or use another output_dir")


def _differences(old: dict, new: dict, prefix: str = "") -> dict[str, tuple[Any, Any]]:
    out: dict[str, tuple[Any, Any]] = {}
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) or isinstance(b, dict):  # a section one side lacks compares as empty
            a, b = (a if isinstance(a, dict) else {}), (b if isinstance(b, dict) else {})
            out.update(_differences(a, b, f"{prefix}{key}."))
        elif a != b:
            out[f"{prefix}{key}"] = (a, b)
    return out


def _flat(tree: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def load_eval_set(name: str, s: EvalSet) -> list[Example]:
    examples = load_examples(s.data, task=s.task)
    if s.numbers:
        examples = [ex for ex in examples if isinstance(ex.ground_truth, dict)
                    and len(ex.ground_truth.get("numbers") or ()) == s.numbers]
        if not examples:
            raise UserError(f"eval_sets.{name}: no row of {s.data} has {s.numbers} numbers (numbers is for Countdown)")
    return examples[: s.limit] if s.limit else examples


class StudyRunner:
    def __init__(self, study: Study, eval_data: dict[str, list[Example]]):
        self.study, self.eval_data = study, eval_data
        self.model_of: dict[tuple[str, int], str] = {}   # (method, seed) -> final model
        self.trained_by: dict[str, tuple[Method, int, int, str]] = {}  # final model -> (method, candidate, seed, start)
        self.chosen: dict[str, int] = {}                 # method -> sweep candidate
        # base.reward.funcs score the evaluation sets too (user reward code); else each row's task
        first = next((cfg for m in study.methods.values() for cfg in m.configs.values()), None)
        self.scorer = Scorer.from_config(first) if first is not None and first.reward.funcs else None
        train = study.cfg.base.get("train") or {}  # the evaluations' precision, resolved once
        self.precision = resolve_precision(train.get("precision", "auto"), train.get("device", "auto"))

    def run_method(self, m: Method, seed: int) -> None:
        start = self.model_of[(m.init, seed)] if m.init else str(self.study.cfg.base.get("model") or "smollm2-135m")
        if m.method == "none":
            self.model_of[(m.name, seed)] = start
            if seed == self.study.cfg.seeds[0]:  # greedy evaluation of an untrained model: one seed is all seeds
                self.evaluate_all(m.name, seed, start, list(self.study.eval_sets))
            return
        if m.name not in self.chosen:
            self.chosen[m.name] = self.choose(m, seed, start) if len(m.candidates) > 1 else 0
        c = self.chosen[m.name]
        final = self.train_run(m, c, seed, start)
        self.model_of[(m.name, seed)] = final
        self.evaluate_all(m.label(c), seed, final, list(self.study.eval_sets))
        self.report()

    def choose(self, m: Method, seed: int, start: str) -> int:
        """Train every candidate with `seed`; the best validation pass@1 wins (ties: the first)."""
        scores = []
        for c in range(len(m.candidates)):
            final = self.train_run(m, c, seed, start)
            scores.append(self.evaluate(m.label(c), seed, final, "validation")["overall"]["pass@1"])
        best = max(range(len(scores)), key=lambda c: (scores[c], -c))
        print(f"[compare] {m.name}: chose {m.candidates[best]} on the validation set "
              f"({', '.join(f'{100 * s:.1f}%' for s in scores)})", flush=True)
        return best

    def chosen_on_disk(self, m: Method) -> None:
        """A method this piece does not run: its sweep's choice, if every candidate's validation result is
        on disk (the same rule as `choose`), so the report keeps it."""
        if len(m.candidates) == 1:
            self.chosen[m.name] = 0
            return
        seed, scores = self.study.cfg.seeds[0], []
        for c in range(len(m.candidates)):
            final = str(Path(m.configs[(c, seed)].output_dir) / "final")
            done = self.stored(m.label(c), seed, final, "validation")
            if done is None:
                return
            scores.append(done["overall"]["pass@1"])
        self.chosen[m.name] = max(range(len(scores)), key=lambda c: (scores[c], -c))

    def train_run(self, m: Method, c: int, seed: int, start: str, again: bool = False) -> str:
        """The run's final model, trained unless it is on disk. A run finished on another machine whose
        weights did not come along (its DONE record, metrics and evaluations did) counts as finished
        until something needs its weights (`ensure_weights`); then it is trained again."""
        cfg = m.configs[(c, seed)]
        cfg.model = start
        out = Path(cfg.output_dir)
        self.trained_by[str(out / "final")] = (m, c, seed, start)
        if (out / "config.yaml").exists():
            check_same_config(cfg, out / "config.yaml")
        if not again and (out / "final" / "config.json").exists():
            print(f"[compare] {m.label(c)} seed {seed}: reusing {out / 'final'}", flush=True)
        elif not again and finished_elsewhere(out):
            print(f"[compare] {m.label(c)} seed {seed}: reusing its results (weights not on this machine)", flush=True)
            return str(out / "final")
        else:
            self.ensure_weights(start)
            if weights_elsewhere(start):
                raise UserError(f"{m.label(c)} seed {seed} starts from {start}, whose weights are not on this "
                                f"machine (its study's results were restored without them): remove "
                                f"{Path(start).parent} and run its study again with --resume")
            if again:
                print(f"[compare] {m.label(c)} seed {seed}: its weights are needed and not on this machine: "
                      f"training it again", flush=True)
                shutil.rmtree(out)
            cfg.resume = latest_checkpoint(out) is not None if out.exists() else False
            print(f"[compare] {m.label(c)} seed {seed}: {'resuming' if cfg.resume else 'training'} "
                  f"({cfg.method}, {m.own.examples} examples)", flush=True)
            (train if cfg.method in OFFLINE_METHODS else train_rl)(cfg)
        finish_run(out)
        return str(out / "final")

    def ensure_weights(self, model: str) -> None:
        """A study run's final model whose weights are not here (see train_run) is trained again. Where the
        new weights differ from the ones its results were measured on (another machine, RL sampling), its
        evaluations on disk are redone, so no set reports the old weights beside the new."""
        if model not in self.trained_by or not weights_elsewhere(model):
            return
        m, c, seed, start = self.trained_by[model]
        was = weights_id(model)
        self.train_run(m, c, seed, start, again=True)
        if weights_id(model) != was:
            print(f"[compare] {m.label(c)} seed {seed}: trained again to other weights than before: its "
                  f"evaluations are redone; runs that started from the old weights are kept", flush=True)
            evals = self.study.runs / "eval"
            sets = [n for n in _all_sets(self.study) if (evals / n / m.label(c) / f"seed{seed}").is_dir()]
            self.evaluate_all(m.label(c), seed, model, sets)

    def evaluate_all(self, label: str, seed: int, model: str, sets: list[str]) -> None:
        for name in sets:
            r = self.evaluate(label, seed, model, name)
            print(f"[compare] {label} seed {seed} on {name}: pass@1 {100 * r['overall']['pass@1']:.1f}%", flush=True)

    def key(self, model: str, set_name: str) -> dict[str, Any]:
        """What an evaluation on disk must have been made of to be read back."""
        reward = self.study.cfg.base.get("reward") or {}
        return {"set": vars(_all_sets(self.study)[set_name]), "protocol": self.study.protocol, "model": model,
                "weights": weights_id(model), "precision": self.precision,
                **({"reward": reward} if reward.get("funcs") else {})}

    def stored(self, label: str, seed: int, model: str, set_name: str) -> dict[str, Any] | None:
        """The evaluation of `model` on a set, if it is on disk, whole, for the same weights."""
        out = self.study.runs / "eval" / set_name / label / f"seed{seed}"
        if not (out / "results.json").exists() or not (out / "records.jsonl").exists():
            return None
        try:
            done = json.loads((out / "results.json").read_text())
        except (OSError, json.JSONDecodeError):
            return None  # a torn write: redone
        return done if done.get("study_key") == self.key(model, set_name) else None

    def evaluate(self, label: str, seed: int, model: str, set_name: str) -> dict[str, Any]:
        """The evaluation of `model` on a set, read back if it is on disk for the same weights."""
        done = self.stored(label, seed, model, set_name)
        if done is not None:
            return done
        if model in self.trained_by and weights_elsewhere(model):
            self.ensure_weights(model)
            return self.evaluate(label, seed, model, set_name)
        s = _all_sets(self.study)[set_name]
        out = self.study.runs / "eval" / set_name / label / f"seed{seed}"
        base, precision, key = self.study.cfg.base, self.precision, self.key(model, set_name)
        started = time.perf_counter()
        r = evaluate_model(model, self.eval_data[set_name], protocol=self.study.protocol,
                           max_new_tokens=s.max_new_tokens, batch_size=s.batch_size,
                           template=(base.get("data") or {}).get("template", "auto"),
                           precision=precision, scorer=self.scorer)
        r["study_key"], r["eval_seconds"] = key, time.perf_counter() - started
        write_report(r, out, title=f"{label} seed {seed} on {set_name}")
        return {k: v for k, v in r.items() if k != "records"}

    def report(self) -> dict[str, Any]:
        return write_study_report(self.study, self.chosen)


def finish_run(run_dir: Path) -> None:
    """A finished run's DONE record (its weights' id), written once; its resume checkpoints (weights and
    optimizer moments, ~1.6 GB each for the embedded model) are deleted: a study reuses a run through its
    final model alone, and they would only fill the disk."""
    if not (run_dir / "final" / "config.json").exists():
        return
    if not (run_dir / DONE).exists():
        write_atomic(run_dir / DONE, json.dumps({"weights": weights_id(str(run_dir / "final"))}) + "\n")
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)


def finished_elsewhere(run_dir: Path) -> bool:
    """The run finished (its DONE record) but its final model is not here. A DONE record beside
    checkpoints and no final model is stale (finish_run deletes them): that run is half-trained."""
    return (run_dir / DONE).exists() and not (run_dir / "final" / "config.json").exists() \
        and not (run_dir / "checkpoints").exists()


def weights_elsewhere(model: str) -> bool:
    """`model` is a study run's final model that finished on another machine (see finished_elsewhere)."""
    path = Path(model)
    return path.name == "final" and finished_elsewhere(path.parent)


def weights_id(model: str) -> str:
    """sha256 of a model directory's weight files (a name such as smollm2-135m stands for itself); for a
    study run's final model that is not on this machine, the id its DONE record saved."""
    path = Path(model)
    if weights_elsewhere(model):
        return json.loads((path.parent / DONE).read_text())["weights"]
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else []
    return ",".join(sha256(f)[:16] for f in files) or model
