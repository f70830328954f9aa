"""SFT vs DFT with the embedded model on the official UFT Countdown data (docs/experiments.md).

Trains SFT and DFT with the same budget on three-number rows of countdown/train, then
evaluates the base model and both fine-tuned models (greedy pass@1) on
  - held-out three-number rows of countdown/test (in-distribution),
  - four-number rows of countdown/test (harder, same task),
  - kk_logic/test (another task: the DFT paper's claim is about generalisation).

    .venv/bin/python scripts/sft_vs_dft.py --data ../shared/data/uft --out runs/sft_vs_dft
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pyarrow.parquet as pq


def subset(src: Path, dst: Path, keep, limit: int) -> Path:
    rows = [r for r in pq.read_table(src).to_pylist() if keep(r)][:limit]
    dst.parent.mkdir(parents=True, exist_ok=True)
    import pyarrow as pa

    pq.write_table(pa.Table.from_pylist(rows), dst)
    return dst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/uft", help="official UFT data directory")
    ap.add_argument("--out", default="runs/sft_vs_dft", help="output directory")
    ap.add_argument("--train-n", type=int, default=960, help="training rows (three-number Countdown)")
    ap.add_argument("--steps", type=int, default=60, help="optimizer steps of 16 examples")
    ap.add_argument("--lr", type=float, default=5e-5, help="peak learning rate (same for both)")
    ap.add_argument("--eval-n", type=int, default=200, help="held-out three-number problems")
    ap.add_argument("--other-n", type=int, default=100, help="rows of each other evaluation set")
    ap.add_argument("--methods", default="base,sft,dft", help="comma-separated subset of base,sft,dft")
    args = ap.parse_args()

    from unift.config import load_config
    from unift.evaluate import evaluate_model, write_report
    from unift.train.loop import train

    data, out = Path(args.data), Path(args.out)
    three = lambda r: len(r["reward_model"]["ground_truth"]["numbers"]) == 3  # noqa: E731
    sets = {
        "train": subset(data / "countdown/train.parquet", out / "data/train3.parquet", three, args.train_n),
        "countdown-3 (held-out)": subset(data / "countdown/test.parquet", out / "data/test3.parquet", three,
                                         args.eval_n),
        "countdown-4": subset(data / "countdown/test.parquet", out / "data/test4.parquet",
                              lambda r: not three(r), args.other_n),
        "kk_logic": subset(data / "kk_logic/test.parquet", out / "data/kk.parquet", lambda r: True, args.other_n),
    }
    budgets = {"countdown-3 (held-out)": 256, "countdown-4": 256, "kk_logic": 384}
    results = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else {}
    for method in args.methods.split(","):
        model = "smollm2-135m"
        if method != "base":
            run_dir = out / method
            cfg = load_config(None, [f"method={method}", f"output_dir={run_dir}", f"data.train={sets['train']}",
                                     f"train.steps={args.steps}", "train.batch_size=16", "train.micro_batch_size=8",
                                     f"train.lr={args.lr}", "train.warmup_ratio=0.1", "log.progress=false",
                                     f"resume={str((run_dir / 'checkpoints').exists()).lower()}"])
            t0 = time.time()
            model = str(train(cfg))
            results.setdefault(method, {})["train_seconds"] = time.time() - t0
        for name, path in sets.items():
            if name == "train":
                continue
            r = evaluate_model(model, str(path), max_new_tokens=budgets[name], batch_size=50)
            write_report(r, out / "eval" / method / name.split(" ")[0], title=f"{method} on {name}")
            results.setdefault(method, {})[name] = r["overall"]
            print(method, name, r["overall"], flush=True)
            (out / "results.json").write_text(json.dumps(results, indent=1))

    lines = ["| model | " + " | ".join(n for n in sets if n != "train") + " |",
             "|---|" + "---|" * (len(sets) - 1)]
    for method, r in results.items():
        cells = [f"{100 * r[n]['pass@1']:.1f}% ({100 * r[n]['formatted']:.0f}% fmt)" for n in sets
                 if n != "train" and n in r]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
