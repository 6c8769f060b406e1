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
