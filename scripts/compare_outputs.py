"""Outputs unchanged: the same short run trained by another commit and by this tree logs the same metrics
to the bit (every key of metrics.jsonl but the wall-clock ``time/*``). For refactors that must not change a
run (issue 36's layout):

    .venv/bin/python scripts/compare_outputs.py --ref e1da3f3                       # SAC-GLAM+HER and PPO-GLAM
    .venv/bin/python scripts/compare_outputs.py --ref e1da3f3 --config ppo_glam_cpu train.total_steps=2048

Each side runs ``python -m sac_glam.cli train`` (a command both layouts have) on one thread, in a
``git worktree`` of ``--ref`` and in this tree, one after the other. Exit 0 when every config matches.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ("sac_glam_her_cpu", "ppo_glam_cpu")


def run(source: Path, config: str, overrides: list[str], run_dir: Path) -> list[dict[str, float]]:
    """Train ``config`` with the package of ``source`` and return its metrics records, ``time/*`` left out."""
    env = {**os.environ, "PYTHONPATH": str(source), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "sac_glam.cli", "train", "--config-name", config, *overrides,
           "train.threads=1", "train.progress=false", f"train.run_dir={run_dir}"]  # fmt: skip
    subprocess.run(cmd, cwd=source, env=env, check=True, stdout=subprocess.DEVNULL)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in records]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--ref", required=True, help="the commit to compare with (e.g. the one before a refactor)"
    )
    parser.add_argument(
        "--config", action="append", help=f"config name (repeatable; default: {', '.join(CONFIGS)})"
    )
    parser.add_argument("overrides", nargs="*", default=["train.total_steps=1024", "train.eval_every=512"])
    args = parser.parse_args()
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        ref = Path(tmp) / "ref"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(ref), args.ref],
                       check=True, capture_output=True)  # fmt: skip
        try:
            for config in args.config or CONFIGS:
                old = run(ref, config, args.overrides, Path(tmp) / f"{config}-ref")
                new = run(ROOT, config, args.overrides, Path(tmp) / f"{config}-new")
                same = old == new
                keys = sorted({k for r in new for k in r})
                print(f"{config} {' '.join(args.overrides)}: {len(new)} records x {len(keys)} keys: "
                      + ("identical to the bit" if same else "DIFFERENT"))  # fmt: skip
                if not same:
                    failed += 1
                    for i, (a, b) in enumerate(zip(old, new, strict=False)):
                        diff = {k: (a.get(k), b.get(k)) for k in set(a) | set(b) if a.get(k) != b.get(k)}
                        if diff:
                            print(f"  first difference, record {i}: {diff}")
                            break
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(ref)], check=False)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
