"""``sac_glam_her_lamorel_multinode`` on one machine (needs lamorel; CI has none: these tests skip).

Two ``lamorel-launch`` "nodes" (machine ranks 0 and 1, ``main_process_ip`` 127.0.0.1, the accelerate
config's port 12345) share one run directory, as two nodes share a cluster file system: node 0 runs the
RL process, node 1 the LLM server (the GPU template's 4 + 4 layout, with 1 + 1). docs/slurm.md,
"Multi-node, tried on one machine", has the same runs as shell commands.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from lamorel_procs import grad_steps, kill_all, kill_lingering, process_tree

pytestmark = [
    pytest.mark.lamorel,
    pytest.mark.skipif(not Path("/proc").is_dir(), reason="lists processes through /proc"),
]

# The tiny model on CPU, 4 environments, a gradient step every 32 transitions from step 64 on.
TINY = ["model.name=tiny-causal", "model.lora=false", "model.load_in_4bit=false", "train.device=cpu",
        "train.threads=1", "lamorel_args.llm_args.parallelism.use_gpu=false",
        "lamorel_args.distributed_setup_args.n_rl_processes=1",
        "lamorel_args.distributed_setup_args.n_llm_processes=1", "env.n_envs=4", "sac.learning_starts=64",
        "sac.batch_size=32", "train.eval_every=0", "train.eval_episodes=8", "train.log_every=32",
        "train.checkpoint_every=4", "train.progress=false", "train.tensorboard=false",
        "model.tiny.d_model=32", "model.tiny.pretrain_steps=0", "model.tiny.d_ff=64", "critic.width=32"]  # fmt: skip
ENV = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _cmd(run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "sac_glam.cli.launch", "--config-name", "sac_glam_her_lamorel_multinode",
            *TINY, *extra, f"train.run_dir={run_dir}"]  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, **ENV}


def _start_nodes(run_dir: Path, logs: Path, *extra: str) -> list[subprocess.Popen[bytes]]:
    """Node 0 then node 1, one second apart (as srun would start them, in no fixed order)."""
    procs = []
    for rank in (0, 1):
        node = ["lamorel_args.accelerate_args.main_process_ip=127.0.0.1",
                f"lamorel_args.accelerate_args.machine_rank={rank}"]  # fmt: skip
        with (logs / f"node{rank}.log").open("a") as out:
            procs.append(subprocess.Popen(_cmd(run_dir, *extra, *node), env=_env(), stdout=out,
                                          stderr=subprocess.STDOUT))  # fmt: skip
        time.sleep(1)
    return procs


def _wait_all(procs: list[subprocess.Popen[bytes]], timeout_s: float) -> list[int]:
    try:
        return [p.wait(timeout=timeout_s) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                kill_all(process_tree(p.pid))
                p.wait()


def _records(run_dir: Path) -> list[dict[str, Any]]:
    """``metrics.jsonl`` without its timing keys (``time/...``), which differ from run to run."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if not k.startswith("time/")} for line in lines]


def test_two_nodes_log_exactly_what_one_node_and_the_local_backend_log(tmp_path):
    pytest.importorskip("lamorel")
    pytest.importorskip("lamorel_launcher")
    steps = "train.total_steps=384"
    two, one, local = tmp_path / "two", tmp_path / "one", tmp_path / "local"
    assert _wait_all(_start_nodes(two, tmp_path, steps), timeout_s=600) == [0, 0], (
        tmp_path / "node0.log"
    ).read_text()[-3000:] + (tmp_path / "node1.log").read_text()[-3000:]
    assert not kill_lingering(str(two))
    single = "lamorel_args.accelerate_args.num_machines=1"
    for run_dir, extra in ((one, [single]), (local, [single, "train.backend=local"])):
        done = subprocess.run(_cmd(run_dir, steps, *extra), env=_env(), capture_output=True, text=True,
                              timeout=600)  # fmt: skip
        assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
        assert f"done: 384 steps in {run_dir}" in done.stdout

    ref = _records(local)
    # The runs train: gradient steps with finite losses, so equality is not between untouched models.
    assert max(r.get("train/grad_steps", 0.0) for r in ref) >= 8
    losses = [r["train/critic_loss"] for r in ref if "train/critic_loss" in r]
    assert losses and all(x == x for x in losses) and len(set(losses)) > 1
    # Same seed, same config: the same trajectory whatever the process layout, to the last bit.
    assert _records(one) == ref
    assert _records(two) == ref
    print(f"two nodes == one node == local backend: {len(ref)} records, {len(ref[-1])} keys in the last")


def test_a_killed_node_stops_the_other_with_exit_76_and_both_resume(tmp_path):
    pytest.importorskip("lamorel")
    pytest.importorskip("lamorel_launcher")
    run_dir = tmp_path / "run"
    extra = ("train.total_steps=512", "train.checkpoint_every=2")
    procs = _start_nodes(run_dir, tmp_path, *extra)
    try:
        deadline = time.monotonic() + 300
        # 8 logged gradient steps: the checkpoint after the first updates is complete (a kill at the first
        # logged steps could race it, and the run would rightly resume from step 0).
        while grad_steps(run_dir / "metrics.jsonl") < 8 and time.monotonic() < deadline:
            assert all(p.poll() is None for p in procs), (tmp_path / "node0.log").read_text()[-3000:]
            time.sleep(0.2)
        assert grad_steps(run_dir / "metrics.jsonl") >= 8, "no 8 gradient steps within 300 s"
        # Node 1 lost whole (a node fault): its lamorel-launch, Lamorel's launcher, the agent, the server.
        kill_all(process_tree(procs[1].pid))
        procs[1].wait()
        started = time.monotonic()
        code = procs[0].wait(timeout=120)  # the survivor must exit, not hang
        waited = time.monotonic() - started
    finally:
        _wait_all(procs, timeout_s=0.1)
    lingering = kill_lingering(str(run_dir))
    text = (tmp_path / "node0.log").read_text()
    assert code == 76, text[-3000:]
    assert not lingering, lingering
    last = text.strip().splitlines()[-1]
    assert "a Lamorel process on another node died or stopped answering" in last, last
    assert last.endswith(f"run the same command to resume from the last checkpoint in {run_dir}"), last
    assert "Traceback" not in text, text[-3000:]

    # The same two commands resume from the last checkpoint and finish the budget.
    (tmp_path / "node0.log").write_text("")
    assert _wait_all(_start_nodes(run_dir, tmp_path, *extra), timeout_s=600) == [0, 0], (
        tmp_path / "node0.log"
    ).read_text()[-3000:] + (tmp_path / "node1.log").read_text()[-3000:]
    resumed = (tmp_path / "node0.log").read_text()
    match = re.search(rf"resuming {re.escape(str(run_dir))} at step (\d+)", resumed)
    assert match and int(match.group(1)) > 0, resumed[-3000:]
    assert f"done: 512 steps in {run_dir}" in resumed
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    before_end = [s for s in steps if s < 512]
    assert before_end == sorted(set(before_end)), steps  # nothing logged twice across the resume
    print(f"node 1 killed: node 0 exited 76 after {waited:.1f} s; resumed at step {match.group(1)}")
