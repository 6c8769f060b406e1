"""Before/after of the seq2seq scorer, interleaved in one process, 1 thread (issue 13, item 4).

The "before" is the scorer as it was before the cross-attention K/V caching (commit 8631c43), a
self-contained module loaded from a file; the "after" is the installed ``sac_glam.llm.scoring``:

    git show 8631c43:sac_glam/llm/scoring.py > /tmp/old_scoring.py
    sac-glam make-model --arch flan-t5-base --out /tmp/flan-t5-base
    OMP_NUM_THREADS=1 .venv/bin/python scripts/measure_scoring.py /tmp/old_scoring.py /tmp/flan-t5-base 2 1

Arguments: OLD_SCORING_PY MODEL_DIR [REPEATS [GRAD_REPEATS]].
"""

import importlib.util
import statistics
import sys
import time

import numpy as np
import torch

from sac_glam.config import EnvConfig, ModelConfig
from sac_glam.envs.vector import PlaygroundTextVecEnv
from sac_glam.llm import scoring as new
from sac_glam.llm.models import load_model

if len(sys.argv) < 3:
    sys.exit(__doc__)
spec = importlib.util.spec_from_file_location("old_scoring", sys.argv[1])
old = importlib.util.module_from_spec(spec)
sys.modules["old_scoring"] = old
spec.loader.exec_module(old)
torch.set_num_threads(1)
model_dir, repeats = sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 3
grad_repeats = int(sys.argv[4]) if len(sys.argv) > 4 else repeats
envs = PlaygroundTextVecEnv(EnvConfig(n_envs=32, n_objects=6), seed=0)
obs, rng = envs.reset(), np.random.default_rng(0)
for _ in range(4):  # a few random steps: some agents hold an object (7 actions), others not (8)
    obs = envs.step(rng.integers(0, [len(a) for a in obs.actions])).obs
prompts, actions = list(obs.prompts), [list(a) for a in obs.actions]
pairs = sum(map(len, actions))
torch.manual_seed(0)
lm = load_model(ModelConfig(name=model_dir, lora=True))
print(
    f"{model_dir}: {len(prompts)} prompts, {pairs} pairs ({min(map(len, actions))}-{max(map(len, actions))} actions), threads {torch.get_num_threads()}"
)


def fwd(mod, grad):
    with torch.set_grad_enabled(grad):
        out = mod.forward_actions(
            lm.model, lm.tokenizer, prompts, actions, hidden="action" if grad else "none"
        )
        if grad:
            ((out.log_pi_BA * out.mask_BA).sum() + out.action_hidden_BAH.sum()).backward()
    return out


with torch.no_grad():
    a, b = fwd(old, False), fwd(new, False)
print(f"max |logp old - new| = {(a.logp_BA - b.logp_BA).abs().max().item():.2e}")
for grad in (False, True):
    times = {"old": [], "new": []}
    for r in range(grad_repeats if grad else repeats):
        for name in ("old", "new") if r % 2 == 0 else ("new", "old"):
            lm.model.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            fwd(old if name == "old" else new, grad)
            times[name].append(time.perf_counter() - t0)
    o, n = statistics.median(times["old"]), statistics.median(times["new"])
    ratios = [x / y for x, y in zip(times["new"], times["old"], strict=True)]
    label = "forward+backward" if grad else "forward (no grad)"
    print(
        f"{label:<18} before {o:7.3f} s ({o / pairs * 1e6:7.0f} us/pair)  after {n:7.3f} s ({n / pairs * 1e6:7.0f} us/pair)"
        f"  after/before median {statistics.median(ratios):.3f} (per repeat {', '.join(f'{x:.3f}' for x in ratios)})"
    )
