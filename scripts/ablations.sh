#!/usr/bin/env bash
# Issue 33's campaign: the paper's ablations (Figures 5, 8, 9, 6) on the N = 3 CPU twin, two runs at a
# time on one torch thread each (`--jobs 2`), each study exported to experiments/results/{study}-cpu/
# as soon as its runs are finished (commit that folder then). Re-running resumes: finished runs are
# skipped, unfinished ones continue from their checkpoint.pt. SIGTERM checkpoints every running run.
#
#   bash scripts/ablations.sh                 # every study, in this order
#   bash scripts/ablations.sh fig9 fig6       # some of them
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
studies=("$@")
[ ${#studies[@]} -gt 0 ] || studies=(fig5 fig8 fig9 fig6)
trap 'kill -TERM "$child" 2>/dev/null; wait "$child"; exit 75' TERM INT
for study in "${studies[@]}"; do
  .venv/bin/sac-glam experiment "$study" --cpu --jobs "${SAC_GLAM_JOBS:-2}" & child=$!
  wait "$child"
  .venv/bin/sac-glam report "results/$study-cpu" --out "experiments/results/$study-cpu" \
    --budgets 5000 10000 20000 --thresholds 0.5 0.8 > /dev/null
  echo "== $study: exported to experiments/results/$study-cpu"
done
