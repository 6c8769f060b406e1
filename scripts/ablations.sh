#!/usr/bin/env bash
# Issue 33's campaign: the paper's ablations (Figures 5, 8, 9, 6) on the N = 3 CPU twin, two runs at a
# time on one torch thread each (`--jobs 2`), each study exported to experiments/results/{study}-cpu/
# as soon as its runs are finished (commit that folder then). Re-running resumes: finished runs are
# skipped, unfinished ones continue from their checkpoint.pt. SIGTERM checkpoints every running run.
#
#   bash scripts/ablations.sh                 # every study, in this order, then the {study}-seeds (below)
#   bash scripts/ablations.sh fig9 fig6       # some of them
#   bash scripts/ablations.sh --save          # before the machine goes: keep the finished runs (commit it)
#   bash scripts/ablations.sh --restore       # only put saved runs back into results/ (every run does it first)
#
# A campaign outlives a sitting of the machine (scripts/campaign.sh): `--save` copies the records of
# every finished run of results/ (result.json, metrics, config; no checkpoint, ~15 KB a run) into
# experiments/campaign/, and the next sitting's first `bash scripts/ablations.sh` puts them back into
# results/, where the runner counts them as done. A run unfinished at `--save` restarts from step 0 on a
# new machine: a 20K-step run is ~20 min, its checkpoint (5-12 MB with the replay buffer) not worth
# committing; scripts/full_env.sh, whose runs take hours, keeps them.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/campaign.sh  # campaign_save / campaign_restore: the records through experiments/campaign/
studies_saved=(fig5 fig6 fig8 fig9)

if [ "${1:-}" = "--save" ]; then campaign_save "${studies_saved[@]}"; exit 0; fi
if [ "${1:-}" = "--restore" ]; then campaign_restore; exit 0; fi
bash scripts/setup.sh
campaign_restore
studies=("$@")
[ ${#studies[@]} -gt 0 ] || studies=(fig5 fig8 fig9 fig6 fig5-seeds fig8-seeds fig9-seeds fig6-seeds)
# {study}-seeds: seeds 3 and 4 of the arms that were within the noise of a neighbour at 3 seeds (the issue
# asks for 5 there; an interval of P(X > Y) that reaches 0.5, docs/results.md "Verdicts").
# fig5: the paper's shared-LLM arms, with and without backprop, prompt+action and prompt.
# fig8: all three arms. fig9: n = 1 / 3 / 5 and capacity x0.5 against x1 (x5 beat every run of both).
# fig6: the four PPO arms (1,024 against 2,048-step rollouts; its SAC arms were all apart).
declare -A CLOSE=(
  [fig5]="obs+action.shared obs.shared obs+action.head-only obs.head-only"
  [fig8]="HER+ratio HER+uniform HER+prior"
  [fig9]="n1 n3.capacity-x1 n5 capacity-x0.5"
  [fig6]="PPO.1024x16 PPO.1024x32 PPO.2048x16 PPO.2048x32"
)
trap 'kill -TERM "$child" 2>/dev/null; wait "$child"; exit 75' TERM INT
for study in "${studies[@]}"; do
  if [[ "$study" == *-seeds ]]; then
    study=${study%-seeds}
    read -r -a close <<< "${CLOSE[$study]}"
    .venv/bin/sac-glam experiment "$study" --cpu --seeds 3 4 --only "${close[@]}" --jobs "${SAC_GLAM_JOBS:-2}" & child=$!
  else
    .venv/bin/sac-glam experiment "$study" --cpu --jobs "${SAC_GLAM_JOBS:-2}" & child=$!
  fi
  wait "$child"
  .venv/bin/sac-glam report "results/$study-cpu" --out "experiments/results/$study-cpu" \
    --budgets 5000 10000 20000 --thresholds 0.5 0.8 > /dev/null
  echo "== $study: exported to experiments/results/$study-cpu"
done
