# Sourced by scripts/ablations.sh and scripts/full_env.sh: a campaign that outlives a sitting of the
# machine. Only the repository survives a sitting, so the runs' records travel through a committed folder,
# experiments/campaign/{study}-cpu/{label}/seed{k}/:
#
#   campaign_save STUDY...   finished runs of results/{study}-cpu/ (result.json): their records (result.json,
#                            metrics, config; ~15 KB). With CAMPAIGN_CHECKPOINTS=1, also the unfinished
#                            ones: their records so far and checkpoint.pt.gz (the last checkpoint, gzip'd:
#                            ~8 MB for a full-environment SAC run with its 100K-transition replay buffer),
#                            dropped again once the run has finished.
#   campaign_restore         the other way, for the runs results/ does not hold (neither a result.json nor a
#                            checkpoint): a finished run is counted as done by the runner, an unfinished one
#                            resumes from its checkpoint exactly where it was saved.
#
# Run from the repository root.
campaign_dir=experiments/campaign
campaign_records=(result.json metrics.jsonl metrics.csv config.yaml)

campaign_save() {
  local study run result to f
  for study in "$@"; do
    for run in results/"$study"-cpu/*/seed*; do
      [ -d "$run" ] || continue
      to="$campaign_dir/${run#results/}"
      if [ -f "$run/result.json" ]; then
        mkdir -p "$to"
        for f in "${campaign_records[@]}"; do [ -f "$run/$f" ] && cp "$run/$f" "$to/"; done
        rm -f "$to/checkpoint.pt.gz"
      elif [ "${CAMPAIGN_CHECKPOINTS:-0}" = 1 ] && [ -f "$run/checkpoint.pt" ]; then
        mkdir -p "$to"
        # The checkpoint first: metrics logged after it are dropped when the run resumes from it.
        gzip -c "$run/checkpoint.pt" > "$to/checkpoint.pt.gz.tmp" && mv "$to/checkpoint.pt.gz.tmp" "$to/checkpoint.pt.gz"
        for f in metrics.jsonl config.yaml; do [ -f "$run/$f" ] && cp "$run/$f" "$to/"; done
      fi
    done
  done
  result=$(find "$campaign_dir" -name result.json 2>/dev/null | wc -l)
  f=$(find "$campaign_dir" -name checkpoint.pt.gz 2>/dev/null | wc -l)
  echo "saved $result finished runs and $f unfinished ones' checkpoints in $campaign_dir/; commit it"
}

campaign_restore() {
  local saved run
  for saved in "$campaign_dir"/*/*/seed*; do
    [ -d "$saved" ] || continue
    [ -f "$saved/result.json" ] || [ -f "$saved/checkpoint.pt.gz" ] || continue
    run="results/${saved#"$campaign_dir"/}"
    [ -e "$run/result.json" ] || [ -e "$run/checkpoint.pt" ] && continue
    mkdir -p "$run"
    for f in "${campaign_records[@]}"; do [ -f "$saved/$f" ] && cp "$saved/$f" "$run/"; done
    if [ -f "$saved/checkpoint.pt.gz" ] && [ ! -f "$saved/result.json" ]; then
      gzip -dc "$saved/checkpoint.pt.gz" > "$run/checkpoint.pt"
    fi
  done
}
