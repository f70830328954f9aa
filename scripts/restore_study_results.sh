#!/usr/bin/env bash
# Put a study's committed raw results back into its runs directory, so that `unift compare --resume`
# on a fresh machine counts those runs and evaluations as done instead of redoing them:
#   bash scripts/restore_study_results.sh NAME RUNS_DIR      (NAME: a folder of docs/results, or a path)
# A run directory (LABEL/seedS: config.yaml, metrics.jsonl, done.json) and an evaluation directory
# (eval/SET/LABEL/seedS: results.json, records.jsonl) come back whole, and only where RUNS_DIR has none:
# what this machine already holds (a run in progress, say) is never mixed with older files. No weights
# travel: a restored run is trained again only if a later run starts from it or one of its evaluations is
# missing (unift.study.runner). The reverse of scripts/copy_study_results.sh. Relative paths are from the
# project root.
set -euo pipefail
cd "$(dirname "$0")/.."
src=$1 runs=$2
[ -d "$src" ] || src=docs/results/$1
[ -d "$src" ] || { echo "restore_study_results: neither $1 nor docs/results/$1 is a folder" >&2; exit 2; }
case $runs in /*) ;; *) runs=$PWD/$runs ;; esac
restored=0
cd "$src"
for dir in */seed*/ eval/*/*/seed*/; do
  [ -d "$dir" ] || continue              # a pattern that matched nothing
  [ -e "$runs/$dir" ] && continue
  case $dir in
    eval/*) files="results.json records.jsonl"; need=records.jsonl ;;
    *)      files="config.yaml metrics.jsonl done.json"; need=config.yaml ;;
  esac
  [ -f "$dir/$need" ] || continue
  mkdir -p "$runs/$dir"
  for f in $files; do
    if [ -f "$dir/$f" ]; then cp "$dir/$f" "$runs/$dir/"; fi
  done
  restored=$((restored + 1))
done
echo "restored $restored run and evaluation folders from $src into $runs"
