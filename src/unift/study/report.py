"""A study's report: results.json (every number), report.md (budgets, pass@1 with 95% intervals
per method and evaluation set, per-seed numbers, the paired comparison of the focus method with
every other, sweep choices) and accuracy.png / reward.png (the mean curve over seeds with a
min-max band). Built from what is on disk, so it is rewritten after every run and a partial study
reports what it has (each row says how many seeds it holds).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from unift.files import write_atomic
from unift.study.spec import Method, Study
from unift.study.stats import RESAMPLES, paired, summary
from unift.tasks.base import CORRECT_SCORE

INTERVALS = (f"95% intervals: two-stage bootstrap over seeds and problems ({RESAMPLES:,} resamples); "
             "[t over seeds] in brackets")


def write_study_report(study: Study, chosen: dict[str, int]) -> dict[str, Any]:
    results = collect(study, chosen)
    out = study.out
    write_atomic(out / "results.json", json.dumps(results, indent=1))
    plots = plot_curves(out, {name: m["runs"] for name, m in results["methods"].items() if m["runs"]})
    write_atomic(out / "report.md", markdown(study, results, plots))
    return results


def label_of(m: Method, chosen: dict[str, int]) -> str | None:
    if m.method == "none":
        return m.name
    return m.label(chosen[m.name]) if m.name in chosen else None


def _scores(study: Study, set_name: str, label: str, seeds: list[int]) -> tuple[list[int], np.ndarray | None, list]:
    """(seeds with an evaluation on disk, their (seeds, problems) 0/1 array, their overall results)."""
    done, rows, overall = [], [], []
    for seed in seeds:
        d = study.runs / "eval" / set_name / label / f"seed{seed}"
        if not (d / "records.jsonl").exists() or not (d / "results.json").exists():
            continue
        greedy = sorted((r for r in map(json.loads, (d / "records.jsonl").read_text().splitlines())
                         if r["sample"] is None), key=lambda r: r["row"])
        done.append(seed)
        rows.append([float(r["reward"] >= CORRECT_SCORE) for r in greedy])
        overall.append(json.loads((d / "results.json").read_text())["overall"])
    return done, (np.array(rows) if rows else None), overall


def collect(study: Study, chosen: dict[str, int]) -> dict[str, Any]:
    seeds = study.cfg.seeds
    methods: dict[str, Any] = {}
    arrays: dict[tuple[str, str], tuple[list[int], np.ndarray]] = {}
    for m in study.methods.values():
        label = label_of(m, chosen)
        if label is None:
            continue
        run_seeds = seeds[:1] if m.method == "none" else seeds
        entry: dict[str, Any] = {"method": m.method, "init": m.init, "group": m.group, "label": label,
                                 "budget": {"examples": m.budget.examples, "rollouts": m.budget.rollouts,
                                            "own_examples": m.own.examples},
                                 "runs": {}, "eval": {}}
        if m.method != "none":
            entry["runs"] = {seed: run_info(study.runs / label / f"seed{seed}") for seed in seeds
                             if run_finished(study.runs / label / f"seed{seed}")}
        if len(m.candidates) > 1:
            entry["sweep"] = sweep_info(study, m)
        for set_name in study.eval_sets:
            done, scores, overall = _scores(study, set_name, label, run_seeds)
            if scores is None:
                continue
            arrays[(m.name, set_name)] = (done, scores)
            entry["eval"][set_name] = {**summary(scores), "seed_list": done,
                                       "formatted": float(np.mean([o["formatted"] for o in overall])),
                                       "stopped": float(np.mean([o["stopped"] for o in overall]))}
        methods[m.name] = entry
    return {"output_dir": str(study.out), "runs_dir": str(study.runs), "protocol": study.protocol, "seeds": seeds,
            "focus": study.focus, "intervals": INTERVALS,
            "eval_sets": {k: vars(v) for k, v in study.eval_sets.items()}, "methods": methods,
            "paired": paired_all(study, arrays)}


def paired_all(study: Study, arrays: dict) -> dict[str, Any]:
    """focus minus each other method, per set, on the seeds both have (an untrained model's one
    evaluation stands for every seed)."""
    out: dict[str, Any] = {}
    for set_name in study.eval_sets:
        if (study.focus, set_name) not in arrays:
            continue
        f_seeds, f_scores = arrays[(study.focus, set_name)]
        for name, m in study.methods.items():
            if name == study.focus or (name, set_name) not in arrays:
                continue
            o_seeds, o_scores = arrays[(name, set_name)]
            if m.method == "none":
                o_seeds, o_scores = f_seeds, np.repeat(o_scores[:1], len(f_seeds), axis=0)
            common = [s for s in f_seeds if s in o_seeds]
            if not common or f_scores.shape[1] != o_scores.shape[1]:
                continue
            a = f_scores[[f_seeds.index(s) for s in common]]
            b = o_scores[[o_seeds.index(s) for s in common]]
            out.setdefault(set_name, {})[name] = {**paired(a, b), "seed_list": common}
    return out


DONE = "done.json"  # in a run directory: the run finished; {"weights": the final model's weights_id}


def run_finished(run: Path) -> bool:
    """Its final model is here, or its DONE record says it finished elsewhere (unift.study.runner)."""
    return (run / "final" / "config.json").exists() or (run / DONE).exists()


def run_info(run: Path) -> dict[str, Any]:
    """Training wall-clock (sum of step times, evaluations during training not included) and steps."""
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()] \
        if (run / "metrics.jsonl").exists() else []
    return {"dir": str(run), "train_seconds": sum(m.get("step_time_s", 0.0) for m in metrics),
            "steps": max((m["step"] for m in metrics), default=0)}


def sweep_info(study: Study, m: Method) -> list[dict[str, Any]]:
    seed = study.cfg.seeds[0]
    rows = []
    for c, values in enumerate(m.candidates):
        path = study.runs / "eval" / "validation" / m.label(c) / f"seed{seed}" / "results.json"
        score = json.loads(path.read_text())["overall"]["pass@1"] if path.exists() else None
        rows.append({"values": values, "validation_pass@1": score, "seed": seed})
    return rows


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _ci(pair: list[float] | None) -> str:
    return "-" if not pair else f"[{100 * pair[0]:.1f}, {100 * pair[1]:.1f}]"


def markdown(study: Study, results: dict[str, Any], plots: list[str] = ()) -> str:
    methods = results["methods"]
    shared = f" (runs and evaluations in {study.runs})" if study.runs != study.out else ""
    lines = [f"# Study {study.out}{shared}", "",
             f"protocol {study.protocol} · seeds {results['seeds']} · {INTERVALS}; accuracies in %", "",
             "## Budgets", "",
             "| method | budget group | training examples | rollouts | train wall-clock per seed (mean s) "
             "| runs done |",
             "|---|---|---|---|---|---|"]
    for name, m in methods.items():
        if m["method"] == "none":
            lines.append(f"| {name} (untrained) | - | 0 | 0 | - | - |")
            continue
        secs = [r["train_seconds"] for r in m["runs"].values()]
        mean = f"{sum(secs) / len(secs):.0f}" if secs else "-"
        label = name + (f" (from {m['init']})" if m["init"] else "")
        label += f" = {m['label']}" if m["label"] != name else ""
        lines.append(f"| {label} | {m['group']} | {m['budget']['examples']} | {m['budget']['rollouts']} | {mean} | "
                     f"{len(secs)}/{len(results['seeds'])} |")
    for set_name, s in results["eval_sets"].items():
        numbers = f", {s['numbers']} numbers" if s["numbers"] else ""
        lines += ["", f"## {set_name}: {s['data']} (limit {s['limit'] or 'all'}{numbers}, "
                      f"{s['max_new_tokens']} new tokens)", "",
                  "| method | pass@1 | 95% interval [t] | per seed | formatted | stopped |",
                  "|---|---|---|---|---|---|"]
        for name, m in methods.items():
            e = m["eval"].get(set_name)
            if e:
                per_seed = ", ".join(f"{s_}: {_pct(v)}" for s_, v in zip(e["seed_list"], e["per_seed"]))
                lines.append(f"| {name} | {_pct(e['mean'])} | {_ci(e['ci_bootstrap'])} {_ci(e['ci_t'])} | "
                             f"{per_seed} | {_pct(e['formatted'])} | {_pct(e['stopped'])} |")
    if results["paired"]:
        lines += ["", f"## Paired: {study.focus} minus each method (same seeds, same problems)", "",
                  "| set | method | difference | 95% interval [t] | seeds | verdict |", "|---|---|---|---|---|---|"]
        for set_name, rows in results["paired"].items():
            for name, p in rows.items():
                lines.append(f"| {set_name} | {name} | {100 * p['mean']:+.1f} | {_ci(p['ci_bootstrap'])} "
                             f"{_ci(p['ci_t'])} | {len(p['seed_list'])} | {p['verdict']} |")
    sweeps = [(name, m["sweep"]) for name, m in methods.items() if m.get("sweep")]
    if sweeps:
        lines += ["", "## Sweeps (chosen on the validation set; not a result)", "",
                  "| method | candidate | validation pass@1 (first seed) |", "|---|---|---|"]
        for name, rows in sweeps:
            for row in rows:
                lines.append(f"| {name} | {row['values']} | {_pct(row['validation_pass@1'])} |")
    for file in plots:
        lines += ["", f"![{file[:-4]}]({file})"]
    return "\n".join(lines) + "\n"


def plot_curves(out: Path, runs_of: dict[str, dict[int, dict]]) -> list[str]:
    """Mean over seeds against step, with a band from the lowest to the highest seed; the names of
    the plots that have data (accuracy.png needs base.eval.every, reward.png an RL method)."""
    # optional at run time: matplotlib loads only when the plots are drawn
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after use("Agg"): drawn without a display

    written = []
    for key, file, ylabel in (("eval_pass@1", "accuracy.png", "held-out pass@1 (base.eval.data)"),
                              ("reward", "reward.png", "training reward (mean)")):
        fig, ax = plt.subplots(figsize=(6, 4))
        for name, runs in runs_of.items():
            curves = [_curve(Path(r["dir"]) / "metrics.jsonl", key) for r in runs.values()]
            steps = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
            if not steps:
                continue
            values = np.array([[c[s] for s in steps] for c in curves])  # (seeds, steps)
            line, = ax.plot(steps, values.mean(axis=0), marker="o", label=f"{name} ({len(curves)} seeds)")
            if len(curves) > 1:
                ax.fill_between(steps, values.min(axis=0), values.max(axis=0), alpha=0.2, color=line.get_color())
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
            png = io.BytesIO()
            fig.savefig(png, format="png", dpi=110, bbox_inches="tight")
            write_atomic(out / file, png.getvalue())
            written.append(file)
        plt.close(fig)
    return written


def _curve(path: Path, key: str) -> dict[int, float]:
    if not path.exists():
        return {}
    return {m["step"]: m[key] for m in map(json.loads, path.read_text().splitlines()) if key in m}
