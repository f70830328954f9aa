#!/usr/bin/env bash
# Put a study's committed raw results back into its runs directory, so that `unift compare --resume`
# on a fresh machine counts those runs and evaluations as done instead of redoing them:
#   bash scripts/restore_study_results.sh NAME RUNS_DIR
# Copies docs/results/NAME/LABEL/seedS/{config.yaml,metrics.jsonl,done.json} and
# docs/results/NAME/eval/SET/LABEL/seedS/{results.json,records.jsonl} under RUNS_DIR; a file already there
# is kept. No weights travel: a restored run is trained again only if a later run starts from it or one of
# its evaluations is missing (unift.study.runner). The reverse of scripts/copy_study_results.sh.
set -euo pipefail
src=docs/results/$1 runs=$2
[ -d "$src" ] || { echo "restore_study_results: $src does not exist" >&2; exit 2; }
mkdir -p "$runs"
here=$PWD
(cd "$src" && find . \( -path './*/seed*/config.yaml' -o -path './*/seed*/metrics.jsonl' -o -path './*/seed*/done.json' \
    -o -path './eval/*/*/seed*/results.json' -o -path './eval/*/*/seed*/records.jsonl' \) \
    -exec cp -n --parents {} "$here/$runs" \;)
