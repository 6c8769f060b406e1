#!/usr/bin/env bash
# The main job: a short SAC-GLAM+HER training on CPU with the default config.
# Extra arguments are passed to lamorel-launch (e.g. `bash scripts/run.sh train.seed=1`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/lamorel-launch "$@"
