#!/usr/bin/env bash
# Issue 34's campaign on the full environment (N = 6, sequential goals), over several sittings of the
# 2-core machine. Re-running resumes: finished runs are skipped, unfinished ones continue from their
# checkpoint. SIGTERM (or Ctrl-C) checkpoints the running runs first.
#
#   bash scripts/full_env.sh her [SEEDS...]     # item 1: fig2-full's SAC-GLAM+HER, one run at a time on 2
#                                               # threads (the preset's two lanes), 120K steps (~2 h)
#   bash scripts/full_env.sh others [SEEDS...]  # item 5: fig2-full's SAC-GLAM and PPO-GLAM, two at a time
#   bash scripts/full_env.sh race [SEEDS...]    # item 3: race-full, a seed's SAC-GLAM+HER and PPO-GLAM side
#                                               # by side at one thread each, 2 h of clock each
#   bash scripts/full_env.sh levers [SEEDS...]  # item 1: levers-full's screens, seeds 0 and 1 side by side
#                                               # at one thread each, 40K steps (~55 min a pair)
#   bash scripts/full_env.sh --save             # before the sitting ends: keep the runs (then commit
#                                               # experiments/campaign/)
#   bash scripts/full_env.sh --export           # the reports into experiments/results/ (commit them)
#
# Seeds default to the experiment's CPU seeds (0-4). A full-environment run is longer than what is left of
# a sitting more often than not, so `--save` keeps the unfinished runs' checkpoints too (gzip'd, ~8 MB for
# SAC with its replay buffer; scripts/campaign.sh), and the next sitting's first command resumes them from
# there: only the steps after the last checkpoint (500 gradient steps, ~4K env steps) are run again.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/campaign.sh
export CAMPAIGN_CHECKPOINTS=1
studies=(fig2-full race-full levers-full)

export_reports() {
  [ -d results/fig2-full-cpu ] && .venv/bin/sac-glam report results/fig2-full-cpu \
    --out experiments/results/fig2-full-cpu-120k --budgets 40000 80000 120000 --thresholds 0.3 0.5 > /dev/null
  [ -d results/race-full-cpu ] && .venv/bin/sac-glam report results/race-full-cpu \
    --out experiments/results/race-full-cpu --budgets 20000 40000 80000 --thresholds 0.3 0.5 > /dev/null
  [ -d results/levers-full-cpu ] && .venv/bin/sac-glam report results/levers-full-cpu \
    --out experiments/results/levers-full-cpu --budgets 20000 40000 --thresholds 0.2 0.3 > /dev/null
  echo "exported into experiments/results/{fig2-full-cpu-120k,race-full-cpu,levers-full-cpu}/; commit them"
}

what=${1:-}
[ $# -gt 0 ] && shift
seeds=()
[ $# -gt 0 ] && seeds=(--seeds "$@")
case "$what" in
  --save) campaign_save "${studies[@]}"; exit 0 ;;
  --export) export_reports; exit 0 ;;
  her) args=(fig2-full --cpu --only SAC-GLAM+HER --jobs 1 train.threads=2) ;;
  others) args=(fig2-full --cpu --only SAC-GLAM PPO-GLAM --jobs 2) ;;
  race) args=(race-full --cpu --jobs 2) ;;
  levers) args=(levers-full --cpu --jobs 2) ;;
  *) echo "usage: bash scripts/full_env.sh {her|others|race|levers} [SEEDS...] | --save | --export" >&2; exit 2 ;;
esac
bash scripts/setup.sh
campaign_restore
trap 'kill -TERM "$child" 2>/dev/null; wait "$child"; exit 75' TERM INT
.venv/bin/sac-glam experiment "${args[@]}" "${seeds[@]}" & child=$!
wait "$child"
campaign_save "${studies[@]}"
