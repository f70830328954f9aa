"""`unift compare CONFIG`: train several methods on the same data with the same budget and
evaluation, then write a report (Markdown table of held-out accuracy, PNG learning curves).

The compare config holds a `base` run config shared by every method and a `methods` mapping
from a run name to the keys that differ (at least `method`). A method may start from another
run's final model with `init: NAME` (e.g. SFT-then-RFT); the name `base` with `method: none`
only evaluates the starting model.

    output_dir: runs/compare-countdown
    base:   {model: smollm2-135m, data: {train: ...}, train: {steps: 20}, eval: {data: ..., every: 5}}
    methods:
      base:    {method: none}
      sft:     {method: sft}
      uft:     {method: uft, hints: {beta: 0.1}}
      sft-rft: {method: rft, init: sft}

Outputs in output_dir: one sub-directory per method (the normal run outputs), report.md,
results.json, accuracy.png (held-out pass@1 against step) and reward.png (training reward
against step, RL methods).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import yaml

from unift.config import OFFLINE_METHODS, Config, load_config, validate
from unift.config_parse import build, merge, parse_overrides
from unift.errors import UserError, suggest
from unift.evaluate import evaluate_model, write_report
from unift.files import write_atomic
from unift.train.loop import train
from unift.train.rl_loop import train_rl


def _read_spec(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"compare config {p} does not exist")
    try:
        spec = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError:
        raise UserError(f"compare config {p} is not valid YAML") from None
    unknown = set(spec) - {"output_dir", "base", "methods"}
    if unknown:
        key = sorted(unknown)[0]
        raise UserError(f"unknown compare key '{key}'{suggest(key, ['output_dir', 'base', 'methods'])}")
    if not isinstance(spec.get("methods"), dict) or not spec["methods"]:
        raise UserError(f"compare config {p} needs a non-empty 'methods' mapping")
    return spec


def _run_configs(spec: dict[str, Any], out: Path, overrides: list[str]):
    """Validate every method's config before anything is trained."""
    base = merge(spec.get("base") or {}, parse_overrides(overrides))
    plans = {}
    for name, over in spec["methods"].items():
        over = dict(over or {})
        init = over.pop("init", None)
        if init is not None and init not in spec["methods"]:
            raise UserError(f"method '{name}': init '{init}' is not one of the compared methods")
        if over.get("method") == "none":
            plans[name] = (None, init)
            continue
        tree = merge(base, over)
        tree["output_dir"] = str(out / name)
        plans[name] = (validate(build(Config, tree, "")), init)
    return base, plans


def run_compare(path: str, overrides: list[str] | None = None) -> dict[str, Any]:
    spec = _read_spec(path)
    out = Path(spec.get("output_dir") or "runs/compare")
    base, plans = _run_configs(spec, out, overrides or [])
    eval_cfg = load_config(None, [f"data.train={base.get('data', {}).get('train', 'x')}",
                                  f"protocol={base.get('protocol') or 'official'}"]
                           + [f"eval.{k}={v}" for k, v in (base.get("eval") or {}).items()])
    if not eval_cfg.eval.data:
        raise UserError("compare needs base.eval.data (the held-out set every method is scored on)")
    model_of: dict[str, str] = {}
    results: dict[str, Any] = {}
    for name in _order(plans):
        cfg, init = plans[name]
        start = model_of[init] if init else str(base.get("model") or "smollm2-135m")
        if cfg is None:
            final = start
        elif (Path(cfg.output_dir) / "final" / "config.json").exists():
            final = str(Path(cfg.output_dir) / "final")  # trained by an earlier compare run
            print(f"[compare] {name}: reusing {final}")
        else:
            cfg.model = start
            final = str((train if cfg.method in OFFLINE_METHODS else train_rl)(cfg))
        model_of[name] = final
        e = eval_cfg.eval
        r = evaluate_model(final, e.data, protocol=eval_cfg.protocol, task=e.task, limit=e.limit,
                           max_new_tokens=e.max_new_tokens,
                           batch_size=e.batch_size, template=eval_cfg.data.template)
        write_report(r, out / "eval" / name, title=name)
        results[name] = {"method": cfg.method if cfg else "none", "init": init, "overall": r["overall"],
                         "by_source": r["by_source"]}
        print(f"[compare] {name}: pass@1 {100 * r['overall']['pass@1']:.1f}%", flush=True)
        _atomic_write(out / "results.json", json.dumps(results, indent=1))
    _atomic_write(out / "report.md", report_markdown(results, spec, eval_cfg.protocol))
    plot_curves(out, [n for n, (c, _) in plans.items() if c is not None])
    return results


def _order(plans: dict[str, tuple]) -> list[str]:
    """Methods in config order, each after the run it starts from."""
    done: list[str] = []
    while len(done) < len(plans):
        progressed = False
        for name, (_, init) in plans.items():
            if name not in done and (init is None or init in done):
                done.append(name)
                progressed = True
                break  # rescan from the top: config order wherever dependencies allow
        if not progressed:
            raise UserError("compare methods' init references form a cycle")
    return done


def report_markdown(results: dict[str, Any], spec: dict[str, Any], protocol: str = "official") -> str:
    sources = sorted({s for r in results.values() for s in r["by_source"]})
    lines = ["| method | " + " | ".join(f"{s} pass@1" for s in sources) + " | formatted | stopped |",
             "|---|" + "---|" * (len(sources) + 2)]
    for name, r in results.items():
        label = name + (f" (from {r['init']})" if r["init"] else "")
        cells = [f"{100 * r['by_source'][s]['pass@1']:.1f}%" if s in r["by_source"] else "" for s in sources]
        stopped = r["overall"].get("stopped")
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {100 * r['overall']['formatted']:.1f}% | "
                     + (f"{100 * stopped:.1f}% |" if stopped is not None else "- |"))
    return (f"## Held-out accuracy (greedy pass@1, protocol {protocol})\n\n" + "\n".join(lines)
            + "\n\n![accuracy](accuracy.png)\n\n![reward](reward.png)\n")


def plot_curves(out: Path, runs: list[str]) -> None:
    # optional at run time: matplotlib loads only when the plots are drawn
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after use("Agg"): drawn without a display

    for key, file, ylabel in (("eval_pass@1", "accuracy.png", "held-out pass@1"),
                              ("reward", "reward.png", "training reward (mean)")):
        fig, ax = plt.subplots(figsize=(6, 4))
        for name in runs:
            path = out / name / "metrics.jsonl"
            if not path.exists():
                continue
            points = [(m["step"], m[key]) for m in map(json.loads, path.read_text().splitlines()) if key in m]
            if points:
                ax.plot(*zip(*points), marker="o", label=name)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
        png = io.BytesIO()
        fig.savefig(png, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        write_atomic(out / file, png.getvalue())


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text)
