"""Pass@1 of a study's evaluations on a Countdown set, split by how many numbers each problem has.

The study's harder set `mixed` (docs/experiments.md section C.2) mixes three- and four-number problems;
its four-number half says whether a method learnt to go beyond the length of chain it was taught. This
reads each evaluation's records.jsonl (its `row` is the line of the data file; greedy responses only,
solved = reward >= CORRECT_SCORE, as in unift.study.report) and the data file's `ground_truth.numbers`,
and prints one line per method and seed, then each method's total over its seeds:

    .venv/bin/python scripts/split_by_numbers.py runs/data/countdown34_test200.jsonl runs/study-dft-base/eval/mixed
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

from unift.tasks.base import CORRECT_SCORE


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", type=Path, help="the evaluated set's JSONL (rows with ground_truth.numbers)")
    ap.add_argument("evals", type=Path, help="an eval/SET folder of a study: LABEL/seedS/records.jsonl")
    args = ap.parse_args(argv)
    if not args.data.is_file() or not args.evals.is_dir():
        print(
            f"split_by_numbers: need a data file and an eval folder, got {args.data} and {args.evals}", file=sys.stderr
        )
        return 2
    sizes = [len(json.loads(line)["ground_truth"]["numbers"]) for line in args.data.open() if line.strip()]
    totals: dict[str, dict[int, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for records in sorted(args.evals.glob("*/seed*/records.jsonl")):
        label, seed = records.parent.parent.name, records.parent.name
        counts: dict[int, list[int]] = defaultdict(lambda: [0, 0])  # numbers -> [solved, problems]
        for rec in map(json.loads, records.read_text().splitlines()):
            if rec.get("sample") is not None:  # a sampled response: pass@1 counts the greedy one, as the report does
                continue
            n = sizes[rec["row"]]
            counts[n][0] += rec["reward"] >= CORRECT_SCORE
            counts[n][1] += 1
        cells = []
        for n in sorted(counts):
            solved, total = counts[n]
            totals[label][n][0] += solved
            totals[label][n][1] += total
            cells.append(f"{n} numbers {solved}/{total}")
        print(f"{label:12s} {seed:6s} " + "  ".join(cells))
    for label, by_n in totals.items():
        cells = [f"{n} numbers {s}/{t} ({100 * s / t:.1f}%)" for n, (s, t) in sorted(by_n.items())]
        print(f"{label:12s} all    " + "  ".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
