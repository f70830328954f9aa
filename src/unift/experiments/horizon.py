"""`unift horizon`: the synthetic horizon experiment of the UFT theory, run over depths and seeds,
summarised (median episodes to 50% pass@1, growth fits), written as results.json, results.md and a
plot. The model (tree, tabular policy, RFT and UFT training) and the full description of the
setting are `unift.experiments.horizon_model`.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from unift.errors import UserError, suggest
from unift.experiments.horizon_model import (
    AUTO_T_HINT,
    CORRECT_REWARD,
    DEFAULT_BETA,
    DEFAULT_BRANCHING,
    DEFAULT_BUDGET,
    DEFAULT_DEPTHS,
    DEFAULT_GROUP,
    DEFAULT_LR,
    DEFAULT_SEEDS,
    DEFAULT_T_HINT,
    MAX_LEAVES,
    METHODS,
    P_HIGH,
    P_LOW,
    WRONG_REWARD,
    Policy,
    RunResult,
    Tree,
    auto_t_hint,
    grpo_advantages,
    hint_fraction,
    leaf_rewards,
    make_tree,
    node_probs,
    pass_at_1,
    run_rft,
    run_uft,
    sample_episodes,
    update,
)
from unift.files import write_atomic

__all__ = [
    "AUTO_T_HINT",
    "CORRECT_REWARD",
    "DEFAULT_BETA",
    "DEFAULT_BRANCHING",
    "DEFAULT_BUDGET",
    "DEFAULT_DEPTHS",
    "DEFAULT_GROUP",
    "DEFAULT_LR",
    "DEFAULT_SEEDS",
    "DEFAULT_T_HINT",
    "MAX_LEAVES",
    "METHODS",
    "P_HIGH",
    "P_LOW",
    "Policy",
    "RunResult",
    "Tree",
    "WRONG_REWARD",
    "auto_t_hint",
    "grpo_advantages",
    "hint_fraction",
    "leaf_rewards",
    "make_tree",
    "node_probs",
    "pass_at_1",
    "run_rft",
    "run_uft",
    "sample_episodes",
    "update",
]


# ----------------------------------------------------------------------------- experiment


def run_one(method: str, depth: int, seed: int, *, branching: int = DEFAULT_BRANCHING,
            budget: int = DEFAULT_BUDGET, group_size: int = DEFAULT_GROUP, lr: float = DEFAULT_LR,
            beta: float = DEFAULT_BETA, t_hint: int = AUTO_T_HINT) -> RunResult:
    tree = make_tree(depth, branching, seed)
    if method == "rft":
        return run_rft(tree, group_size=group_size, lr=lr, budget=budget, seed=seed)
    if method in ("uft", "uft-uniform"):
        return run_uft(tree, group_size=group_size, lr=lr, beta=beta, t_hint=t_hint, budget=budget,
                       seed=seed, hint="cosine" if method == "uft" else "uniform")
    raise UserError(f"unknown method {method!r} (valid: {', '.join(METHODS)})")


def run_experiment(depths: Sequence[int] = DEFAULT_DEPTHS, branching: int = DEFAULT_BRANCHING,
                   seeds: int = DEFAULT_SEEDS, budget: int = DEFAULT_BUDGET,
                   group_size: int = DEFAULT_GROUP, lr: float = DEFAULT_LR, beta: float = DEFAULT_BETA,
                   t_hint: int = DEFAULT_T_HINT, methods: Sequence[str] = METHODS,
                   log: Callable[[str], None] | None = None) -> dict:
    """Every method x depth x seed; returns the config, every run, a summary per method and H, fits."""
    start = time.perf_counter()
    t_hint = t_hint or auto_t_hint(budget, group_size)
    runs = []
    for depth in depths:
        for method in methods:
            for seed in range(seeds):
                r = run_one(method, depth, seed, branching=branching, budget=budget, group_size=group_size,
                            lr=lr, beta=beta, t_hint=t_hint)
                runs.append(r.as_dict())
                if log:
                    got = f"{r.episodes}" if r.episodes is not None else f">{budget} (pass@1 {r.final_pass_at_1:.2g})"
                    log(f"H={depth:<3d} {method:<11s} seed={seed}: {got} episodes ({r.seconds:.1f}s)")
    config = dict(depths=list(depths), branching=branching, seeds=seeds, budget=budget,
                  group_size=group_size, lr=lr, beta=beta, t_hint=t_hint, p_high=P_HIGH, p_low=P_LOW,
                  methods=list(methods), correct_reward=CORRECT_REWARD, wrong_reward=WRONG_REWARD, K=1)
    summary = summarize(runs, methods, depths, branching)
    return dict(config=config, runs=runs, summary=summary, fits=growth_fits(summary),
                seconds=time.perf_counter() - start)


def _median(sorted_vals: list[float]) -> float:
    m = len(sorted_vals)
    return sorted_vals[m // 2] if m % 2 else 0.5 * (sorted_vals[m // 2 - 1] + sorted_vals[m // 2])


def summarize(runs: list[dict], methods: Sequence[str], depths: Sequence[int], branching: int) -> list[dict]:
    """Median / min / max episodes-to-50% per method and H.

    A capped run counts as +infinity, so a median or max that involves one is None (">cap").
    """
    out = []
    for method in methods:
        for depth in depths:
            eps = [r["episodes"] for r in runs if r["method"] == method and r["depth"] == depth]
            if not eps:
                continue
            vals = sorted(math.inf if e is None else float(e) for e in eps)
            med = _median(vals)
            out.append(dict(method=method, depth=depth, n=len(vals), capped=sum(e is None for e in eps),
                            median=None if math.isinf(med) else med,
                            min=None if math.isinf(vals[0]) else vals[0],
                            max=None if math.isinf(vals[-1]) else vals[-1],
                            rft_lower_bound=branching ** depth / 4))
    return out


def growth_fits(summary: list[dict]) -> dict[str, dict]:
    """Per method, least-squares slopes over the depths with a measured median (H >= 2):
    `per_level` = median growth factor per unit of H (exp of the slope of ln median vs H; B for
    exponential-in-H growth) and `power` = the slope of ln median vs ln H (the polynomial degree)."""
    fits = {}
    for method in dict.fromkeys(s["method"] for s in summary):
        pts = [(s["depth"], s["median"]) for s in summary
               if s["method"] == method and s["median"] is not None and s["depth"] >= 2]
        if len(pts) < 3:
            continue
        h = np.array([p[0] for p in pts], dtype=float)
        y = np.log([p[1] for p in pts])
        fits[method] = dict(depths=[int(x) for x in h], per_level=float(np.exp(np.polyfit(h, y, 1)[0])),
                            power=float(np.polyfit(np.log(h), y, 1)[0]))
    return fits


def _fmt(v: float | None, budget: int) -> str:
    return f">{budget:,}" if v is None else f"{v:,.0f}"


def markdown_table(results: dict) -> str:
    cfg = results["config"]
    budget = cfg["budget"]
    lines = [f"Episodes until pass@1 >= 0.5 (B={cfg['branching']}, K=1, {cfg['seeds']} seeds, n={cfg['group_size']}, "
             f"lr={cfg['lr']}, beta={cfg['beta']}, T_hint={cfg['t_hint']} updates; budget {budget:,} episodes "
             f"per run; >{budget:,} = not reached within the budget)", "",
             "| H | B^H/4 (RFT lower bound) | method | median | min | max | runs capped |",
             "|---|---|---|---|---|---|---|"]
    order = {m: i for i, m in enumerate(cfg["methods"])}
    for s in sorted(results["summary"], key=lambda s: (s["depth"], order.get(s["method"], 99))):
        lines.append(f"| {s['depth']} | {s['rft_lower_bound']:,.0f} | {s['method'].upper()} | "
                     f"{_fmt(s['median'], budget)} | {_fmt(s['min'], budget)} | {_fmt(s['max'], budget)} | "
                     f"{s['capped']}/{s['n']} |")
    fits = results.get("fits") or {}
    if fits:
        lines += ["", "Fits of the median over the H where it was measured (capped medians left out): "
                  "growth factor per level (B = exponential) and degree of a power law in H:", ""]
        for m, f in fits.items():
            lines.append(f"- {m.upper()}: x{f['per_level']:.2f} per level, ~H^{f['power']:.1f} "
                         f"(H = {', '.join(map(str, f['depths']))})")
    return "\n".join(lines) + "\n"


def plot_png(results: dict) -> bytes:
    """Episodes to solve vs H on a log scale: median line, min-max band, capped runs marked."""
    # matplotlib loads only when the plot is drawn
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after use("Agg"): drawn without a display

    cfg = results["config"]
    budget = cfg["budget"]
    fig, ax = plt.subplots(figsize=(7, 4.8), dpi=120)
    colors = {"rft": "tab:red", "uft": "tab:blue", "uft-uniform": "tab:green"}
    for method in cfg["methods"]:
        rows = sorted((s for s in results["summary"] if s["method"] == method), key=lambda s: s["depth"])
        if not rows:
            continue
        c = colors.get(method)
        hs = [s["depth"] for s in rows]
        # ">cap" values are drawn at the budget line: they are lower limits, not measurements;
        # a band that reaches the dashed budget line has at least one run that did not solve.
        lo = [budget if s["min"] is None else s["min"] for s in rows]
        hi = [budget if s["max"] is None else s["max"] for s in rows]
        measured = [(s["depth"], s["median"]) for s in rows if s["median"] is not None]
        if measured:
            ax.plot(*zip(*measured), "o-", color=c, label=f"{method.upper()} median")
        ax.fill_between(hs, lo, hi, color=c, alpha=0.18, label=f"{method.upper()} min-max")
        capped = [(s["depth"], budget) for s in rows if s["median"] is None]
        if capped:
            ax.plot(*zip(*capped), "^", color=c, markersize=10, markerfacecolor="none",
                    label=f"{method.upper()} median >{budget:,} (drawn at the cap)")
    hs = sorted(cfg["depths"])
    ax.plot(hs, [cfg["branching"] ** h / (4 * cfg.get("K", 1)) for h in hs], "k:", label="B^H/(4K): RFT lower bound")
    ax.axhline(budget, color="gray", lw=0.8, ls="--", label=f"budget {budget:,}")
    ax.set_yscale("log")
    ax.set_ylim(bottom=1)
    ax.set_xlabel("horizon H (tree depth)")
    ax.set_ylabel("episodes until pass@1 >= 0.5")
    ax.set_title(f"B={cfg['branching']}, K=1, {cfg['seeds']} seeds, n={cfg['group_size']}, lr={cfg['lr']}, "
                 f"beta={cfg['beta']}, T_hint={cfg['t_hint']}", fontsize=9)
    ax.set_xticks(hs)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def write_outputs(results: dict, out_dir: Path | str) -> dict[str, Path]:
    """results.json, results.md and horizon.png in out_dir, each written atomically."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "results.json", "md": out_dir / "results.md", "png": out_dir / "horizon.png"}
    write_atomic(paths["json"], json.dumps(results, indent=1) + "\n")
    write_atomic(paths["md"], markdown_table(results))
    write_atomic(paths["png"], plot_png(results))
    return paths


# ----------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The experiment's flags (used by `unift horizon` and `python -m unift.experiments.horizon`)."""
    parser.add_argument("--depths", default=",".join(map(str, DEFAULT_DEPTHS)),
                        help="comma-separated tree depths H (default: %(default)s)")
    parser.add_argument("--branching", type=int, default=DEFAULT_BRANCHING,
                        help="children per node B (default: %(default)s)")
    parser.add_argument("--seeds", type=int, default=DEFAULT_SEEDS,
                        help="seeds 0..N-1 per method and H (default: %(default)s)")
    parser.add_argument("--budget", type=int, default=DEFAULT_BUDGET,
                        help="episode cap per run; a run that does not solve reports '>cap' (default: %(default)s)")
    parser.add_argument("--group-size", type=int, default=DEFAULT_GROUP,
                        help="GRPO group size n (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=DEFAULT_LR,
                        help="SGD learning rate on the logits (default: %(default)s)")
    parser.add_argument("--beta", type=float, default=DEFAULT_BETA,
                        help="UFT hint log-likelihood coefficient (default: %(default)s)")
    parser.add_argument("--t-hint", type=int, default=DEFAULT_T_HINT,
                        help="UFT updates over which the hint fraction decays 0.95 -> 0.05, then 0; "
                             f"0 = auto: min({AUTO_T_HINT}, budget / (4 x group size)) (default: %(default)s)")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help="comma-separated methods among " + ", ".join(METHODS) + " (default: %(default)s)")
    parser.add_argument("--out", default="runs/horizon", help="output directory (default: %(default)s)")
    return parser


def _parse_list(flag: str, text: str) -> list[str]:
    items = [x for x in str(text).replace(" ", ",").split(",") if x]
    if not items:
        raise UserError(f"{flag} must list at least one value")
    if len(set(items)) != len(items):
        raise UserError(f"{flag} has a repeated value: {text}")
    return items


def _parse_depths(text: str) -> list[int]:
    try:
        depths = [int(x) for x in _parse_list("--depths", text)]
    except ValueError:
        raise UserError(f"--depths must be comma-separated integers, got {text!r}") from None
    bad = [d for d in depths if d < 1]
    if bad:
        raise UserError(f"--depths must all be >= 1, got {bad[0]}")
    return sorted(depths)


def validate(args: argparse.Namespace) -> dict:
    """Checked keyword arguments for run_experiment; UserError (one line) on a bad value."""
    depths = _parse_depths(args.depths)
    methods = _parse_list("--methods", args.methods)
    for m in methods:
        if m not in METHODS:
            raise UserError(f"unknown method {m!r} in --methods{suggest(m, METHODS)}")
    if args.branching < 2:
        raise UserError(f"--branching must be >= 2, got {args.branching}")
    if args.branching ** max(depths) > MAX_LEAVES:
        raise UserError(f"--branching {args.branching} with depth {max(depths)} gives more than 2^62 leaves")
    if args.seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {args.seeds}")
    if args.group_size < 2:
        raise UserError(f"--group-size must be >= 2 (group-normalised advantages), got {args.group_size}")
    if args.budget < args.group_size:
        raise UserError(f"--budget must be >= --group-size ({args.group_size}), got {args.budget}")
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise UserError(f"--lr must be a positive number, got {args.lr}")
    if not (math.isfinite(args.beta) and args.beta >= 0):
        raise UserError(f"--beta must be a number >= 0, got {args.beta}")
    if args.t_hint < 0:
        raise UserError(f"--t-hint must be >= 0 (0 = auto), got {args.t_hint}")
    t_hint = args.t_hint or auto_t_hint(args.budget, args.group_size)
    if "uft" in methods and t_hint * args.group_size > args.budget:
        raise UserError(f"--t-hint {t_hint} x --group-size {args.group_size} exceeds --budget {args.budget}: "
                        "the hint would never fade within the budget")
    if not str(args.out).strip():
        raise UserError("--out must not be empty")
    return dict(depths=depths, branching=args.branching, seeds=args.seeds, budget=args.budget,
                group_size=args.group_size, lr=args.lr, beta=args.beta, t_hint=t_hint, methods=methods)


def main(args: argparse.Namespace) -> int:
    """Validate the flags, run every method x H x seed, write the outputs, print the table."""
    kwargs = validate(args)
    results = run_experiment(**kwargs, log=lambda s: print(s, file=sys.stderr, flush=True))
    paths = write_outputs(results, Path(args.out))
    print(markdown_table(results))
    print(f"wall time {results['seconds']:.1f}s; wrote {paths['json']}, {paths['md']} and {paths['png']}")
    return 0


if __name__ == "__main__":
    _parser = add_arguments(argparse.ArgumentParser(
        prog="python -m unift.experiments.horizon",
        description="RFT vs UFT on a B-ary tree: episodes until 50% pass@1 as the horizon H grows."))
    try:
        raise SystemExit(main(_parser.parse_args()))
    except UserError as exc:
        print(f"unift horizon: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
