#!/usr/bin/env bash
# The Countdown comparison (configs/compare_countdown.yaml) under the official protocol, with the
# outside check of every trained model, raw results copied into docs/results/compare-official/.
#
#   bash scripts/compare_official.sh            # from the project root, after `make install`
#
# Resumable in pieces: `unift compare --resume` reuses every finished run and evaluation in
# runs/compare-countdown (a killed run continues from its checkpoint), and a model already checked
# is not checked again. Run it again after an interruption; commit docs/results/compare-official/
# whenever a method has finished.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUT=runs/compare-countdown
RESULTS=docs/results/compare-official
mkdir -p runs/data "$RESULTS"
[ -f runs/data/countdown_train.jsonl ] || .venv/bin/unift data countdown --numbers 3 --n 2000 --seed 1 --out runs/data/countdown_train.jsonl
[ -f runs/data/countdown_test.jsonl ] || .venv/bin/unift data countdown --numbers 3 --n 100 --seed 2 --out runs/data/countdown_test.jsonl
.venv/bin/unift compare configs/compare_countdown.yaml --resume  # finished runs and evaluations are reused
for run in "$OUT"/*/seed0/; do
  name=$(basename "$(dirname "$run")")
  [ -f "$run/final/config.json" ] || continue
  mkdir -p "$RESULTS/$name"
  cp "$run/metrics.jsonl" "$run/config.yaml" "$run/final/generation_config.json" "$RESULTS/$name/" 2>/dev/null || true
  if [ ! -f "$RESULTS/$name/outside_check_fp32.json" ]; then
    $PY scripts/outside_check.py "$run/final" runs/data/countdown_test.jsonl --backend both --dtype fp32 \
        --batch-size 50 --out "$RESULTS/$name/outside_check_fp32.json"
  fi
done
for dir in "$OUT"/eval/heldout/*/seed0/; do
  name=$(basename "$(dirname "$dir")")
  mkdir -p "$RESULTS/eval/$name"
  cp "$dir"/results.json "$dir"/results.md "$dir"/records.jsonl "$RESULTS/eval/$name/" 2>/dev/null || true
done
cp "$OUT/results.json" "$OUT/report.md" "$RESULTS/" 2>/dev/null || true
echo "raw results in $RESULTS"
