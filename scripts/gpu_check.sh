#!/usr/bin/env bash
# The paper path on a CUDA machine in one command (docs/paper_scale.md): make-model, scorer exactness,
# SAC/PPO updates at batch 256 with and without 4-bit, a 2,048-step SAC-GLAM+HER run and a resume.
#   bash scripts/gpu_check.sh            # on a GPU: must finish in < 8 minutes, exit 0
#   bash scripts/gpu_check.sh --dry      # on a CPU: the same steps with CI shapes
#   bash scripts/gpu_check.sh --work DIR # keep models and runs in DIR (reused on a rerun)
# Needs the package installed with a CUDA torch (offline: pip install --no-index --find-links WHEELS -e .).
# PYTHON selects the interpreter (default: .venv/bin/python if present, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
if ! "$PY" -c "import sac_glam, torch, transformers, peft, bitsandbytes" 2>/dev/null; then
  echo "GPU CHECK FAILED: $PY cannot import sac_glam/torch/transformers/peft/bitsandbytes; install the project first" >&2
  exit 1
fi
limit=480  # the GPU check's budget: 8 minutes
dry=0
for arg in "$@"; do [ "$arg" = "--dry" ] && dry=1; done
if [ "$dry" = 1 ]; then
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
  limit=900
fi
set +e
timeout --signal=TERM "$limit" "$PY" scripts/gpu_check.py "$@"
rc=$?
set -e
if [ "$rc" -eq 124 ]; then
  echo "GPU CHECK FAILED: over the ${limit}s budget" >&2
fi
exit "$rc"
