#!/usr/bin/env bash
# The first study (docs/experiments.md): configs/study_countdown.yaml (UFT, SFT, RFT, SFT-then-RFT, 3 seeds,
# two evaluation sets), then the offline-RL pipeline (unift sample with the seed-0 SFT model) and
# configs/study_offline.yaml (SFT vs DFT on the verified samples, 3 seeds). Raw results are copied to
# docs/results/study-countdown/ and docs/results/study-offline/ after each part.
#
#   bash scripts/study_countdown.sh        # from the project root, after `make install`
#
# Resumable in pieces, also on another machine: every step reuses what is finished (unift compare --resume,
# unift sample resumes), and the raw results committed under docs/results are restored first.
set -euo pipefail
cd "$(dirname "$0")/.."
U=.venv/bin/unift
D=runs/data
mkdir -p "$D"
[ -f $D/countdown_train.jsonl ] || $U data countdown --numbers 3 --n 2000 --seed 1 --out $D/countdown_train.jsonl
[ -f $D/countdown_test200.jsonl ] || $U data countdown --numbers 3 --n 200 --seed 2 --out $D/countdown_test200.jsonl
[ -f $D/countdown_val.jsonl ] || $U data countdown --numbers 3 --n 100 --seed 3 --out $D/countdown_val.jsonl

# on a fresh machine: what earlier pieces committed counts as done (no weights travel; see the script)
bash scripts/restore_study_results.sh study-countdown runs/study-countdown
bash scripts/restore_study_results.sh study-offline runs/study-offline
$U compare configs/study_countdown.yaml --resume
bash scripts/copy_study_results.sh runs/study-countdown study-countdown
# the committed verified samples are the study's data; they are drawn again only where none are committed
if [ ! -f $D/countdown_verified.jsonl ] && [ -f docs/results/study-offline/countdown_verified.jsonl ]; then
  cp docs/results/study-offline/countdown_verified.jsonl docs/results/study-offline/countdown_verified.jsonl.summary.json $D/
fi
if [ ! -f $D/countdown_verified.jsonl ]; then
  $U sample --model runs/study-countdown/sft/seed0/final --data $D/countdown_train.jsonl --limit 400 --k 4 \
      --max-new-tokens 128 --out $D/countdown_verified.jsonl
  mkdir -p docs/results/study-offline
  cp $D/countdown_verified.jsonl $D/countdown_verified.jsonl.summary.json docs/results/study-offline/
fi
$U compare configs/study_offline.yaml --resume
bash scripts/copy_study_results.sh runs/study-offline study-offline
echo "raw results in docs/results/study-countdown and docs/results/study-offline"
