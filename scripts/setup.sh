#!/usr/bin/env bash
# Create or reuse .venv and install torch (CPU build) and the package with its dev extra.
# Idempotent: it reinstalls only when pyproject.toml changed since the last successful install.
set -euo pipefail
cd "$(dirname "$0")/.."
# pyproject.toml's requires-python: 3.11 to 3.13. Prefer python3.11 (the tested version), then the
# newest other supported one, then python3; $PYTHON overrides.
if [ -z "${PYTHON:-}" ]; then
  PYTHON=python3
  for cand in python3.11 python3.13 python3.12; do
    if command -v "$cand" >/dev/null 2>&1; then PYTHON=$cand; break; fi
  done
fi
PY=$PYTHON
if ! "$PY" -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] <= (3, 13) else 1)'; then
  echo "sac-glam needs Python 3.11 to 3.13; $PY is $("$PY" -V 2>&1) (set PYTHON=/path/to/python3.X)" >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv

# torch first, pinned, and the CPU build unless told otherwise: on Linux, PyPI's torch==2.13.0 is the
# CUDA build (29 packages, 19 of them nvidia/cuda/triton, several GB). Where pip as configured already
# resolves it to a CPU build (a local wheel folder, a mirror), that is used; else PyTorch's CPU index.
# SAC_GLAM_TORCH_INDEX picks another index (a CUDA build: https://download.pytorch.org/whl/cu126), or
# `pypi` for pip's default.
TORCH=torch==2.13.0
TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
install_torch() {
  local index=${SAC_GLAM_TORCH_INDEX:-} report
  if [ -z "$index" ]; then
    report=$(.venv/bin/python -m pip install -q --dry-run --no-deps --report - "$TORCH" 2>/dev/null || true)
    if printf '%s' "$report" | grep -q '"install": \[\]'; then
      return 0  # already installed
    elif printf '%s' "$report" | grep -q "\"version\": \"${TORCH#torch==}+cpu\""; then
      index=pypi  # pip's own configuration finds the CPU build
    else
      index=$TORCH_CPU_INDEX
    fi
  fi
  if [ "$index" = pypi ]; then
    .venv/bin/python -m pip install -q "$TORCH"
  else
    echo "== $TORCH from $index"
    .venv/bin/python -m pip install -q --index-url "$index" "$TORCH"
  fi
}
stamp=.venv/.sac-glam-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "== installing torch==2.13.0 (CPU unless SAC_GLAM_TORCH_INDEX says) and sac-glam[dev] into .venv"
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  install_torch
  .venv/bin/python -m pip install -q -e ".[dev]"
  echo "$want" > "$stamp"
fi
