#!/usr/bin/env bash
# Create or reuse .venv and install torch (CPU build) and the package with its dev extra.
# Idempotent: it reinstalls only when pyproject.toml changed since the last successful install.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), f"sac-glam needs Python 3.11, found {sys.version}"'
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.sac-glam-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "== installing torch==2.13.0 (CPU) and sac-glam[dev] into .venv"
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  # torch is pinned first: a bare `torch` requirement would pull several GB of CUDA wheels.
  .venv/bin/python -m pip install -q torch==2.13.0
  .venv/bin/python -m pip install -q -e ".[dev]"
  echo "$want" > "$stamp"
fi
