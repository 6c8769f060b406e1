#!/usr/bin/env bash
# CI's second stack: a GPU node's image emulated on the CPU (issue 35; docs/paper_scale.md#an-offline-node).
# A fresh venv gets what such a node ships (the newest transformers 5 that takes huggingface_hub 1.x,
# tokenizers 0.23, accelerate, peft, ...; no bitsandbytes, omegaconf, hydra-core, gymnasium, rliable),
# `sac-glam wheelhouse` downloads the rest for it, the package is installed from the wheelhouse only
# (--no-index), then: the LLM tests (scorer exactness, make-model shapes, LoRA, 4-bit, devices), the GPU
# check's dry run and a short training. torch is the CPU build from this machine's disk, never PyPI's.
#   bash .ci/node_stack.sh                          # in a new temporary folder
#   NODE_STACK_DIR=/tmp/ns bash .ci/node_stack.sh   # in that one (the venv is made anew, wheels reused)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${NODE_STACK_DIR:-}" ]; then
  dir=$NODE_STACK_DIR
else
  dir=$(mktemp -d /tmp/sac-glam-node-stack.XXXXXX)
  trap 'rm -rf "$dir"' EXIT  # the venv holds torch: 1.5 GB
fi
py=${PYTHON:-python3.11}
N=$dir/node/bin
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1
t0=$SECONDS
step() { echo "== node stack ($((SECONDS - t0)) s): $*"; }

step "the node's image in $dir/node"
rm -rf "$dir/node"
"$py" -m venv "$dir/node"
# One resolution: torch pinned to the file on this disk (a bare torch would pull PyPI's CUDA build).
"$N/python" -m pip install -q torch==2.13.0 "transformers>=5,<6" "huggingface_hub>=1,<2" "tokenizers>=0.23,<0.24" \
  "accelerate<1.16" "peft<0.22" safetensors numpy matplotlib "tensorboard<2.22" tqdm pandas pytest
"$N/python" -m pip list --format=freeze > "$dir/node-freeze.txt"
if "$N/python" -c "import bitsandbytes" 2>/dev/null; then
  echo "the node's image must not have bitsandbytes" >&2
  exit 1
fi
grep -E "^(torch|transformers|huggingface[-_]hub|tokenizers|accelerate|peft)==" "$dir/node-freeze.txt" | tr '\n' ' '
echo

step "sac-glam wheelhouse for it"
.venv/bin/sac-glam wheelhouse --out "$dir/wheels" --have-freeze "$dir/node-freeze.txt" | tee "$dir/wheelhouse.txt"
grep -q "^total .* MB in" "$dir/wheelhouse.txt"

step "the wheelhouse for the node of issue 35 (Python 3.12, .ci/node_issue35.txt): under 60 MB"
.venv/bin/sac-glam wheelhouse --out "$dir/wheels312" --python 3.12 --platform manylinux_2_28_x86_64 \
  --have-freeze .ci/node_issue35.txt | tee "$dir/wheelhouse312.txt" | grep -E "^total|MB  bitsandbytes"
awk '/^total/ { if ($2 >= 60) { print "over 60 MB"; exit 1 } }' "$dir/wheelhouse312.txt"

step "install from the wheelhouse only"
"$N/python" -m pip install -q --no-index --find-links "$dir/wheels" -e .
"$N/python" - <<'EOF'
import bitsandbytes, huggingface_hub, tokenizers, transformers
assert transformers.__version__.startswith("5."), transformers.__version__
assert huggingface_hub.__version__.startswith("1."), huggingface_hub.__version__
print("node stack: transformers", transformers.__version__, "huggingface_hub", huggingface_hub.__version__,
      "tokenizers", tokenizers.__version__, "bitsandbytes", bitsandbytes.__version__)
EOF

step "the LLM tests"
"$N/python" -m pytest -q -p no:cacheprovider -m "not slow" tests/test_scoring.py tests/test_packed.py \
  tests/test_paper_shapes.py tests/test_models.py tests/test_dtypes.py tests/test_devices.py

step "scripts/gpu_check.sh --dry"
PYTHON=$N/python bash scripts/gpu_check.sh --dry --work "$dir/gpu_check" | tail -n 12

step "a short training (sac_glam_her_cpu, 1,024 steps)"
"$N/lamorel-launch" --config-name sac_glam_her_cpu train.total_steps=1024 train.eval_episodes=8 \
  train.threads=1 train.progress=false train.run_dir="$dir/run" | tail -n 3
test -f "$dir/run/result.json"
step "passed"
