#!/usr/bin/env bash
# The full study (docs/experiments.md), after the first one (scripts/study_countdown.sh, which it runs first
# and which reuses what is done): UFT's variants (configs/study_uft_variants.yaml), the 60-step budget
# (configs/study_long.yaml) and DFT from the base model (configs/study_dft_base.yaml). All three share the
# first study's runs directory, so its base, uft and sft runs and their evaluations are reused, not redone.
# Each study's report goes to docs/results/NAME, every run's metrics and evaluations to
# docs/results/study-countdown (the shared runs directory), after each study; study_countdown.sh restores them
# on a fresh machine, so the full study runs in pieces across machines without its weights.
#
#   bash scripts/study_full.sh        # from the project root, after `make install`; resumable in pieces
set -euo pipefail
cd "$(dirname "$0")/.."
U=.venv/bin/unift
bash scripts/study_countdown.sh
for name in uft-variants long dft-base; do
  $U compare "configs/study_${name//-/_}.yaml" --resume
  bash scripts/copy_study_results.sh "runs/study-$name" "study-$name" runs/study-countdown study-countdown
done
echo "raw results in docs/results/study-{countdown,offline,uft-variants,long,dft-base}"
