#!/usr/bin/env bash
# Keep a copy of every checkpoint a training run writes, for diagnosing it through training
# (`sac-glam bench heldout RUN_DIR/snapshots/step*.pt`, docs/heldout.md). A run keeps only its newest
# two checkpoints; this copies RUN_DIR/checkpoint.pt to RUN_DIR/snapshots/step{N}.pt (N: its env
# steps) each time it changes, until the process PID ends.
#
#   lamorel-launch train.run_dir=runs/x ... & bash scripts/snapshot_checkpoints.sh runs/x $!
set -euo pipefail
run=${1:?usage: snapshot_checkpoints.sh RUN_DIR PID}
pid=${2:?usage: snapshot_checkpoints.sh RUN_DIR PID}
python=${PYTHON:-$(dirname "$0")/../.venv/bin/python}
mkdir -p "$run/snapshots"
# (A finished process that its parent has not reaped yet is a zombie: kill -0 still succeeds on it.)
while kill -0 "$pid" 2>/dev/null && ! grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null; do
  if [ -f "$run/checkpoint.pt" ] && cp "$run/checkpoint.pt" "$run/snapshots/.copy.pt" 2>/dev/null; then
    # A copy taken mid-rename fails to load: skip it and try again at the next poll.
    steps=$(OMP_NUM_THREADS=1 "$python" -c "import sys, torch
print(torch.load(sys.argv[1], weights_only=True)['loop']['steps'])" "$run/snapshots/.copy.pt" 2>/dev/null || true)
    if [ -n "$steps" ] && [ "$steps" -gt 0 ] && [ ! -f "$run/snapshots/step$steps.pt" ]; then
      mv "$run/snapshots/.copy.pt" "$run/snapshots/step$steps.pt"
      echo "snapshot: $run/snapshots/step$steps.pt"
    fi
  fi
  sleep 20
done
rm -f "$run/snapshots/.copy.pt"
