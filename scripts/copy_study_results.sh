#!/usr/bin/env bash
# Copy a study's raw results (numbers and records, no weights) into docs/results/NAME:
#   bash scripts/copy_study_results.sh OUTPUT_DIR NAME [RUNS_DIR]
# OUTPUT_DIR's report (results.json, report.md, study.yaml, plots) goes to docs/results/NAME; the runs'
# metrics.jsonl, config.yaml and done.json and the evaluations' results.json and records.jsonl under RUNS_DIR
# (default OUTPUT_DIR) go to docs/results/NAME too, or, for a RUNS_DIR shared with another study, to that
# study's folder (the 4th argument, default NAME).
set -euo pipefail
src=$1 dst=docs/results/$2 runs=${3:-$1} runs_dst=docs/results/${4:-$2}
mkdir -p "$dst" "$runs_dst"
cp "$src"/results.json "$src"/report.md "$src"/study.yaml "$dst"/
cp "$src"/*.png "$dst"/ 2>/dev/null || true
here=$PWD
(cd "$runs" && find . \( -name metrics.jsonl -o -name config.yaml -o -name done.json -o -path './eval/*' -name 'results.json' \
    -o -path './eval/*' -name records.jsonl \) -not -path '*/checkpoints/*' -not -path '*/final/*' \
    -exec cp --parents {} "$here/$runs_dst" \;)
# (scripts/restore_study_results.sh puts them back on another machine)
