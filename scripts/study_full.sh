#!/usr/bin/env bash
# The full study (docs/experiments.md), after the first one (scripts/study_countdown.sh, which it runs first
# and which reuses what is done): UFT's variants (configs/study_uft_variants.yaml), the 60-step budget
# (configs/study_long.yaml) and DFT from the base model (configs/study_dft_base.yaml). The first two share the
# first study's runs directory, so its base and uft runs and their evaluations are reused, not redone; their
# reports go to docs/results/NAME, their runs' metrics and evaluations to docs/results/study-countdown.
# DFT from the base model has its own runs directory (its SFT runs trained on the machine its DFT runs are)
# and its harder evaluation set `mixed`; all of it goes to docs/results/study-dft-base. Committed results are
# restored first on a fresh machine, so the full study runs in pieces across machines without its weights.
#
#   bash scripts/study_full.sh        # from the project root, after `make install`; resumable in pieces
set -euo pipefail
cd "$(dirname "$0")/.."
U=.venv/bin/unift
bash scripts/study_countdown.sh
for name in uft-variants long; do
  $U compare "configs/study_${name//-/_}.yaml" --resume
  bash scripts/copy_study_results.sh "runs/study-$name" "study-$name" runs/study-countdown study-countdown
done
# the harder set, chosen on its validation version (seed 4) before any result: docs/experiments.md section C
[ -f runs/data/countdown34_test200.jsonl ] || $U data countdown --n 200 --seed 5 --out runs/data/countdown34_test200.jsonl
if [ -d docs/results/study-dft-base ]; then bash scripts/restore_study_results.sh study-dft-base runs/study-dft-base; fi
$U compare configs/study_dft_base.yaml --resume
bash scripts/copy_study_results.sh runs/study-dft-base study-dft-base
echo "raw results in docs/results/study-{countdown,offline,uft-variants,long,dft-base}"
