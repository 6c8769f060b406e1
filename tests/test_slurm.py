"""slurm/cpu.sbatch on a real single-node SLURM cluster (Debian's slurmctld, slurmd, munge).

``tests/slurm_cluster.sh`` starts the daemons (and installs them when ``CI=true``). Two jobs run side by
side with a tiny budget:

- one submitted by ``sac-glam experiment --slurm`` (the runner's sbatch line): it must complete and write
  metrics and ``result.json``;
- one submitted with ``sbatch slurm/cpu.sbatch`` and sent SIGUSR1 (``scancel --signal=USR1 --batch``)
  once it has a checkpoint: the script forwards the signal, lamorel-launch saves and exits 75, the script
  requeues the job, and the next start resumes from the checkpoint to the full budget.

SLURM holds a requeued job for ~2 minutes (BeginTime); the test releases it at once with
``scontrol update StartTime=now`` to stay within a few minutes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lamorel_procs import grad_steps, kill_lingering, pids_with_env, processes_mentioning
from llm_fixtures import SMALL_TINY_MODEL

from sac_glam.cli import experiment_plan, experiment_runs

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "env.n_envs=4", "env.max_steps=6", *SMALL_TINY_MODEL, "critic.width=32", "train.eval_every=0", "train.eval_episodes=8", "train.log_every=16", "train.tensorboard=false",
    "sac.batch_size=8", "sac.learning_starts=16", "sac.update_every=8", "sac.n_updates=1", "sac.chunk_size=8",
    "buffer.capacity=200", "train.checkpoint_every=4",
]  # fmt: skip
COMPLETE_STEPS = 256
REQUEUE_STEPS = 512
TIMEOUT_S = 170.0


def _have_slurm() -> bool:
    return all(shutil.which(b) for b in ("sbatch", "scontrol", "slurmctld", "slurmd", "munged"))


@pytest.fixture(scope="module")
def cluster() -> None:
    ci = os.environ.get("CI") == "true"
    if not _have_slurm() and not ci:
        pytest.skip(
            "SLURM not installed (apt-get install slurmctld slurmd slurm-client munge) and CI is not set"
        )
    if os.geteuid() != 0:
        if ci:
            pytest.fail("the SLURM test starts slurmctld/slurmd as root; CI must run it as root")
        pytest.skip("the SLURM test starts slurmctld/slurmd and needs root")
    if not (REPO / ".venv" / "bin" / "lamorel-launch").exists():
        pytest.skip(
            f"{REPO}/.venv/bin/lamorel-launch missing: the job runs the repository's venv (scripts/setup.sh)"
        )
    proc = subprocess.run(
        ["bash", str(REPO / "tests" / "slurm_cluster.sh")], capture_output=True, text=True, timeout=600
    )
    if proc.returncode != 0:
        pytest.fail(f"tests/slurm_cluster.sh failed:\n{proc.stdout}\n{proc.stderr}")


def job_info(job_id: str) -> dict[str, str]:
    """``scontrol show job -o`` as a dict (JobState, Restarts, ExitCode, ...); empty once purged."""
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out.splitlines()[0])) if out.strip() else {}


def wait_for(predicate, what: str, deadline: float, poll_s: float = 1.0):  # type: ignore[no-untyped-def]
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out waiting for {what}")


def completing(job_id: str) -> bool:
    out = subprocess.run(
        ["squeue", "-h", "--states=COMPLETING", "-j", job_id], capture_output=True, text=True
    ).stdout
    return bool(out.strip()) or "COMPLETING" in job_info(job_id).get("JobState", "")


def steps_of(run_dir: Path) -> list[int]:
    return [
        json.loads(line)["step"]
        for line in (run_dir / "metrics.jsonl").read_text().splitlines()
        if line.strip()
    ]


def test_cpu_template_completes_and_requeues_after_usr1(cluster: None, tmp_path: Path) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAC_GLAM_", "SLURM_"))}
    jobs: list[str] = []
    try:
        # Job A: through the experiment runner (its sbatch line), runs to completion.
        exp_file = tmp_path / "experiments.yaml"
        exp_file.write_text(
            "smoke:\n  title: smoke\n  seeds: [0]\n  runs:\n    - {label: SAC, config: sac_glam_her}\n"
            f"  cpu:\n    seeds: [0]\n    overrides: [{', '.join([*TINY, f'train.total_steps={COMPLETE_STEPS}'])}]\n"
        )
        specs = experiment_plan.plan("smoke", cpu=True, results_dir=tmp_path / "results", path=exp_file)
        [spec_a] = specs
        [job_a] = experiment_runs.submit_slurm(
            specs, template=REPO / "slurm" / "cpu.sbatch", sbatch_args=["--cpus-per-task=1"]
        )
        jobs.append(job_a)

        # Job B: sbatch by hand from the repository (the template's default venv: $SLURM_SUBMIT_DIR/.venv).
        env_b = {
            **env,
            "SAC_GLAM_RESULTS": str(tmp_path / "results"),
            "SAC_GLAM_EXPERIMENT": "manual",
            "SAC_GLAM_LABEL": "SAC",
        }
        run_b = tmp_path / "results" / "manual" / "SAC" / "seed0"
        log_b = tmp_path / "job_b.out"
        job_b = subprocess.run(
            ["sbatch", "--parsable", "--array=0", "--cpus-per-task=1", f"--output={log_b}", "slurm/cpu.sbatch",
             "sac_glam_her_cpu", *TINY, f"train.total_steps={REQUEUE_STEPS}"],
            cwd=REPO, env=env_b, check=True, capture_output=True, text=True,
        ).stdout.strip().split(";")[0]  # fmt: skip
        jobs.append(job_b)

        # Signal B once it has saved a checkpoint (its Python handler is installed by then).
        wait_for(lambda: (run_b / "checkpoint.pt").exists(), "job B's first checkpoint", deadline, 0.5)
        assert job_info(job_b).get("JobState") == "RUNNING", job_info(job_b)
        subprocess.run(["scancel", "--signal=USR1", "--batch", job_b], check=True)
        wait_for(lambda: job_info(job_b).get("Restarts") == "1" and job_info(job_b).get("JobState") == "PENDING",
                 "job B to be requeued", deadline, 0.5)  # fmt: skip
        # Release the hold only once the first instance is gone: a requeued job stays COMPLETING while its
        # batch script is killed, and starting it again then fails ("Job credential revoked").
        wait_for(lambda: not completing(job_b), "job B's first instance to end", deadline, 0.5)
        time.sleep(2.0)
        subprocess.run(["scontrol", "update", f"jobid={job_b}", "StartTime=now"], check=True)

        for job in (job_a, job_b):
            wait_for(lambda job=job: job_info(job).get("JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"),
                     f"job {job} to finish", deadline)  # fmt: skip

        # A: completed, metrics and result written, log in the run directory.
        info_a = job_info(job_a)
        assert info_a["JobState"] == "COMPLETED" and info_a["ExitCode"] == "0:0", info_a
        assert steps_of(spec_a.run_dir)[-1] == COMPLETE_STEPS
        assert json.loads((spec_a.run_dir / "result.json").read_text())["steps"] == COMPLETE_STEPS
        assert any(
            "rollout/success_rate" in line
            for line in (spec_a.run_dir / "metrics.jsonl").read_text().splitlines()
        )
        assert list(spec_a.run_dir.glob("slurm-*.out")), (
            "the runner's --output should put the log in the run dir"
        )
        assert experiment_plan.run_status(spec_a.run_dir, COMPLETE_STEPS) == "done"

        # B: requeued once, resumed from its checkpoint, finished the full budget without duplicated steps.
        info_b = job_info(job_b)
        log = log_b.read_text()
        assert info_b["JobState"] == "COMPLETED" and info_b["Restarts"] == "1", (info_b, log)
        assert "received SIGUSR1" in log and "requeueing job" in log, log
        resumed = re.search(r"resuming \S+ at step (\d+)", log)
        assert resumed, log
        assert 0 < int(resumed.group(1)) < REQUEUE_STEPS
        steps = steps_of(run_b)
        # Nothing logged twice across the resume: strictly increasing steps, except that the end of a
        # run adds its final progress and evaluation records at the last step (as in uninterrupted runs).
        before_end = [s for s in steps if s < REQUEUE_STEPS]
        assert before_end == sorted(set(before_end)), steps
        assert steps == sorted(steps) and steps[-1] == REQUEUE_STEPS, steps
        assert steps.count(REQUEUE_STEPS) == steps_of(spec_a.run_dir).count(COMPLETE_STEPS), steps
        assert json.loads((run_b / "result.json").read_text())["steps"] == REQUEUE_STEPS
    finally:
        for job in jobs:
            if job_info(job).get("JobState") in ("PENDING", "RUNNING", "REQUEUED", "COMPLETING"):
                subprocess.run(["scancel", job], check=False)


def _lamorel_venv() -> Path:
    """A venv with sac-glam and lamorel for the job: ``$SAC_GLAM_LAMOREL_VENV``, or the one running the tests."""
    named = os.environ.get("SAC_GLAM_LAMOREL_VENV")
    venv = Path(named) if named else Path(sys.prefix)
    probe = subprocess.run([str(venv / "bin" / "python"), "-c", "import lamorel, lamorel_launcher, sac_glam"],
                           capture_output=True)  # fmt: skip
    if probe.returncode != 0 or not (venv / "bin" / "lamorel-launch").exists():
        pytest.skip(f"no lamorel in {venv} (set SAC_GLAM_LAMOREL_VENV to a venv with sac-glam and lamorel)")
    return venv


def test_cpu_template_requeues_a_job_whose_llm_server_died(cluster: None, tmp_path: Path) -> None:
    """A real Lamorel server killed inside a real SLURM job (exit 76): requeued and resumed with the default
    bound; not requeued with ``SAC_GLAM_MAX_REQUEUES=0``. Needs lamorel (CI has none: skips)."""
    venv = _lamorel_venv()
    deadline = time.monotonic() + 600
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAC_GLAM_", "SLURM_"))}
    env.update(SAC_GLAM_VENV=str(venv), SAC_GLAM_RESULTS=str(tmp_path / "results"), HF_HUB_OFFLINE="1")
    steps = 512
    jobs: dict[str, tuple[str, Path, Path]] = {}  # label -> (job id, run dir, log)
    try:
        for label, bound in (("requeued", "3"), ("stopped", "0")):
            log = tmp_path / f"{label}.out"
            job = subprocess.run(
                ["sbatch", "--parsable", "--array=0", "--cpus-per-task=1", f"--output={log}", "slurm/cpu.sbatch",
                 "lamorel_cpu", *TINY, "sac.learning_starts=64", f"train.total_steps={steps}"],
                cwd=REPO, env={**env, "SAC_GLAM_LABEL": label, "SAC_GLAM_MAX_REQUEUES": bound}, check=True,
                capture_output=True, text=True,
            ).stdout.strip().split(";")[0]  # fmt: skip
            jobs[label] = (job, tmp_path / "results" / "adhoc" / label / "seed0", log)

        killed: dict[str, int] = {}
        for label, (_, run_dir, _) in jobs.items():
            # Kill the LLM server (rank 1 with 1 RL process) once the run has a checkpoint past step 0: an
            # update is 4 gradient steps, and the checkpoint after it is written once its metrics record is,
            # so 8 logged gradient steps mean that the checkpoint after the first update is complete.
            wait_for(lambda run_dir=run_dir: grad_steps(run_dir / "metrics.jsonl") >= 8, f"{label}'s checkpoint",
                     deadline, 0.2)  # fmt: skip
            [server] = pids_with_env(str(run_dir), "RANK=1")
            os.kill(server, signal.SIGKILL)  # what the out-of-memory killer sends
            killed[label] = server

        job, run_dir, log = jobs["requeued"]
        wait_for(lambda: job_info(job).get("Restarts") == "1" and job_info(job).get("JobState") == "PENDING",
                 "the job to be requeued", deadline, 0.5)  # fmt: skip
        wait_for(lambda: not completing(job), "its first instance to end", deadline, 0.5)
        time.sleep(2.0)
        subprocess.run(["scontrol", "update", f"jobid={job}", "StartTime=now"], check=True)
        final = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT")
        for label, (job, _, _) in jobs.items():
            wait_for(lambda job=job: job_info(job).get("JobState") in final, f"{label} to finish", deadline)

        job, run_dir, log = jobs["requeued"]
        info, text = job_info(job), log.read_text()
        assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", (info, text[-3000:])
        assert f"LLM server 0 (rank 1, pid {killed['requeued']} on " in text, text[-3000:]
        assert "lamorel-launch exited with 76" in text
        assert "requeueing job" in text and "(1 of SAC_GLAM_MAX_REQUEUES=3 without a new checkpoint)" in text
        resumed = re.search(r"resuming \S+ at step (\d+)", text)
        assert resumed and 0 < int(resumed.group(1)) < steps, text[-3000:]
        before_end = [s for s in steps_of(run_dir) if s < steps]
        assert before_end == sorted(set(before_end)) and steps_of(run_dir)[-1] == steps

        job, run_dir, log = jobs["stopped"]
        info, text = job_info(job), log.read_text()
        assert info["JobState"] == "FAILED" and info["Restarts"] == "0" and info["ExitCode"] == "76:0", info
        assert f"LLM server 0 (rank 1, pid {killed['stopped']} on " in text, text[-3000:]
        assert "(SAC_GLAM_MAX_REQUEUES=0); not requeueing" in text, text[-3000:]
        assert not processes_mentioning(str(run_dir))  # nothing of the run outlives the job
    finally:
        for job, run_dir, _ in jobs.values():
            if job_info(job).get("JobState") in ("PENDING", "RUNNING", "REQUEUED", "COMPLETING"):
                subprocess.run(["scancel", job], check=False)
            kill_lingering(str(run_dir), wait_s=10)


# ---------------------------------------------------------------------------------------------------
# The requeue bound after a dead Lamorel process (exit 76): the templates themselves, with stand-ins for
# lamorel-launch, scontrol and srun on PATH (no SLURM needed).
# ---------------------------------------------------------------------------------------------------

FAKES = {
    "lamorel-launch": 'echo "lamorel-launch $*"; exit "$FAKE_RC"\n',
    "scontrol": 'if [[ "$1" == show ]]; then echo localhost; else echo "$*" >>"$SCONTROL_LOG"; fi\n',
    "srun": 'while [[ "$1" == --* ]]; do shift; done; exec "$@"\n',
}


@pytest.mark.parametrize("template", ["cpu", "v100_single_node", "v100_multi_node"])
def test_templates_requeue_a_dead_process_a_bounded_number_of_times(template: str, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in FAKES.items():
        (bin_dir / name).write_text("#!/usr/bin/env bash\n" + body)
        (bin_dir / name).chmod(0o755)
    log = tmp_path / "scontrol.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAC_GLAM_", "SLURM_"))}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", SCONTROL_LOG=str(log), SLURM_JOB_ID="42",
               SLURM_SUBMIT_DIR=str(tmp_path), SAC_GLAM_VENV=str(tmp_path / "no-venv"),
               SAC_GLAM_RESULTS=str(tmp_path / "results"), SLURM_JOB_NODELIST="localhost", SLURM_NODEID="0",
               SLURM_JOB_NUM_NODES="1", SLURM_CPUS_PER_TASK="4", SAC_GLAM_MAX_REQUEUES="2")  # fmt: skip
    run_dir = tmp_path / "results" / "adhoc" / "cfg" / "seed0"

    def run(rc: int) -> tuple[bool, str]:
        """Run the template with lamorel-launch exiting ``rc``: (requeued?, stderr)."""
        before = log.read_text().count("requeue") if log.exists() else 0
        proc = subprocess.run(["bash", str(REPO / "slurm" / f"{template}.sbatch"), "cfg"], env={**env, "FAKE_RC": str(rc)},
                              cwd=tmp_path, capture_output=True, text=True, timeout=60)  # fmt: skip
        assert proc.returncode == rc, proc.stdout + proc.stderr
        after = log.read_text().count("requeue 42") if log.exists() else 0
        return after > before, proc.stderr

    assert [run(76)[0] for _ in range(2)] == [True, True]  # the bound: 2 in a row
    requeued, err = run(76)
    assert not requeued and "2 requeues without a new checkpoint (SAC_GLAM_MAX_REQUEUES=2)" in err, err
    # A new checkpoint since the last requeue is progress: the count starts again.
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "checkpoint.pt").write_bytes(b"x")
    assert run(76)[0]
    os.utime(run_dir / "checkpoint.pt", (time.time() + 10, time.time() + 10))
    assert run(76)[0] and run(76)[0] and not run(76)[0]
    # Other failures are not requeued: a crash (1), a full disk (74), a refusal (2), 75 without SIGUSR1.
    assert not any(run(rc)[0] for rc in (1, 74, 2, 75))
