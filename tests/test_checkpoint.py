"""Checkpoints as data (weights_only), refusing to restart over a run, and disk faults on write.

The exact-resume tests (SIGTERM, kill and resume bit-identical) are in ``test_train.py``; these pin
what a checkpoint may contain, how a file that is not data is refused without running it, what a run
directory that cannot be resumed does, and that a failed write leaves the previous checkpoint intact.
"""

import collections
import errno
import json
import os
import pickle
import random
import re
import signal
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
import torch
from test_train import SAC_TINY, _cfg

from sac_glam.run import checkpoint as ck
from sac_glam.run.checkpoint import (
    CheckpointWriteError,
    RunDirError,
    UnsafeCheckpointError,
    load_checkpoint,
    resume_or_start,
    save_checkpoint,
)
from sac_glam.run.train import EXIT_CHECKPOINT_FAILED, EXIT_REFUSED, RunStopped, train

SHORT = [*SAC_TINY, "train.total_steps=48"]


class _Evil:
    """Unpickling it runs ``touch MARKER``: what a poisoned checkpoint in a shared directory could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def _bytes(run_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run_dir.iterdir()) if p.is_file()}


# ------------------------------------------------------------------------------- format


def test_round_trip_keeps_values_types_and_dtypes(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    rng.random(5)
    strided = np.arange(20, dtype=np.int16)[::-3]  # negative strides: from_numpy cannot take it as is
    state = {
        "arrays": [(np.arange(6) % 3).astype(d).reshape(2, 3) for d in (np.int16, np.int32, np.int64, np.uint16, np.float32,
                                                                 np.float64, np.bool_, np.uint8, np.complex64)],
        "zero_d": np.array(7.5, dtype=np.float32), "empty": np.zeros((0, 4), dtype=np.int64), "strided": strided,
        "scalars": (np.float64(0.1), np.int64(-3), np.bool_(True), np.float32(2.5)),
        "plain": {"big": 2**130, "f": 0.1, "s": "Go to red tomato", "n": None, 3: [True, (1, "a")], "b": b"\x00"},
        "ordered": collections.OrderedDict(w=torch.randn(2, 2)), "param": torch.nn.Parameter(torch.ones(3)),
        "rng": rng.bit_generator.state, "python_rng": random.getstate(),
    }  # fmt: skip
    save_checkpoint(tmp_path, state)
    raw = torch.load(tmp_path / "checkpoint.pt", weights_only=True)  # the file is data on its own
    assert raw["format"] == ck.FORMAT
    back = load_checkpoint(tmp_path)
    assert back is not None
    for a, b in zip(state["arrays"], back["arrays"], strict=True):
        assert type(b) is np.ndarray and b.dtype == a.dtype and b.shape == a.shape and np.array_equal(a, b)
    assert back["zero_d"].shape == () and back["zero_d"].dtype == np.float32 and back["zero_d"] == 7.5
    assert back["empty"].shape == (0, 4) and back["empty"].dtype == np.int64
    assert np.array_equal(back["strided"], strided) and back["strided"].dtype == np.int16
    for a, b in zip(state["scalars"], back["scalars"], strict=True):
        assert type(b) is type(a) and b == a
    assert type(back["scalars"]) is tuple
    assert back["plain"] == state["plain"] and type(back["plain"][3][1]) is tuple
    assert type(back["ordered"]) is dict and torch.equal(back["ordered"]["w"], state["ordered"]["w"])
    assert torch.equal(back["param"], state["param"])
    other = np.random.default_rng(0)
    other.bit_generator.state = back["rng"]
    assert np.array_equal(other.random(4), rng.random(4))
    random.setstate(back["python_rng"])
    drawn = random.random()
    random.setstate(state["python_rng"])
    assert random.random() == drawn


class _Obs(NamedTuple):
    prompts: list[str]


@pytest.mark.parametrize("bad,where", [
    ({"loop": {"recent": collections.deque([1], maxlen=2)}}, "state['loop']['recent']: collections.deque"),
    ({"obs": _Obs(["p"])}, "state['obs']: test_checkpoint._Obs"),
    ({"x": [np.array(["a", "b"])]}, "state['x'][0]: numpy dtype <U1"),
    ({"x": {np.int64(1): 2}}, "state['x']: key np.int64(1) of type int64"),
])  # fmt: skip
def test_what_would_not_load_is_refused_at_save_time_naming_where(
    tmp_path: Path, bad: dict, where: str
) -> None:
    save_checkpoint(tmp_path, {"ok": 1})
    before = _bytes(tmp_path)
    with pytest.raises(TypeError, match="^" + re.escape(where)):
        save_checkpoint(tmp_path, bad)
    assert _bytes(tmp_path) == before  # nothing written: the previous checkpoint stays the newest


# ------------------------------------------------------------------------------- untrusted files


@pytest.mark.parametrize("how", ["torch.save", "bare pickle"])
def test_malicious_checkpoint_is_refused_without_running_it(tmp_path: Path, how: str) -> None:
    marker = tmp_path / "pwned"
    save_checkpoint(tmp_path, {"step": 1})
    save_checkpoint(tmp_path, {"step": 2})  # a good checkpoint.prev.pt is there too: no silent fallback
    evil = {"format": ck.FORMAT, "loop": _Evil(marker)}
    if how == "torch.save":
        torch.save(evil, tmp_path / "checkpoint.pt")
    else:
        (tmp_path / "checkpoint.pt").write_bytes(pickle.dumps(evil))
    # Sanity: the file really runs its payload when unpickled the unsafe way.
    probe = tmp_path / "probe"
    probe.mkdir()
    torch.save({"x": _Evil(probe / "ran")}, probe / "x.pt")
    torch.load(probe / "x.pt", weights_only=False)
    assert (probe / "ran").exists()

    with pytest.raises(UnsafeCheckpointError) as err:
        load_checkpoint(tmp_path)
    assert not marker.exists()
    message = str(err.value)
    assert "\n" not in message and "posix.system" in message and "checkpoint.pt" in message
    assert "train.restart=true" in message


def test_malicious_checkpoint_stops_train_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "pwned"
    torch.save({"format": ck.FORMAT, "x": _Evil(marker)}, tmp_path / "checkpoint.pt")
    with pytest.raises(RunStopped) as err:
        train(_cfg("sac_glam_her_cpu", SHORT, tmp_path))
    assert err.value.code == EXIT_REFUSED and not marker.exists()
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sac-glam: ") and "posix.system" in lines[0]


def test_an_old_pickled_checkpoint_is_refused_naming_its_classes(tmp_path: Path) -> None:
    from sac_glam.run.train import LoopState

    # Format 1 (before this change): LoopState and numpy arrays pickled as objects.
    torch.save({"loop": LoopState(), "rng": np.zeros(3)}, tmp_path / "checkpoint.pt")
    with pytest.raises(UnsafeCheckpointError, match=r"sac_glam\.run\.train\.LoopState"):
        load_checkpoint(tmp_path)


# ------------------------------------------------------------------------------- no silent restart


def test_unreadable_checkpoints_refuse_then_restart_moves_the_run_aside(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train(_cfg("sac_glam_her_cpu", SHORT, tmp_path))
    (tmp_path / "checkpoint.pt").write_bytes(b"truncated")
    (tmp_path / "checkpoint.prev.pt").write_bytes(b"")
    before = _bytes(tmp_path)
    capsys.readouterr()
    with pytest.raises(RunStopped) as err:
        train(_cfg("sac_glam_her_cpu", SHORT, tmp_path))
    assert err.value.code == EXIT_REFUSED
    message = capsys.readouterr().err.strip()
    assert "\n" not in message
    for part in ("checkpoint.pt cannot be read", "checkpoint.prev.pt cannot be read", "metrics.jsonl holds",
                 "up to step 48", "train.restart=true"):  # fmt: skip
        assert part in message, part
    assert _bytes(tmp_path) == before  # refused: nothing overwritten

    result = train(_cfg("sac_glam_her_cpu", [*SHORT, "train.restart=true"], tmp_path))
    assert result.steps == 48
    [aside] = [p for p in tmp_path.iterdir() if p.name.startswith("restart-")]
    assert _bytes(aside) == {k: v for k, v in before.items() if k in ck.RUN_FILES}
    assert (aside / "final").is_dir()
    assert load_checkpoint(tmp_path) is not None

    def steps(path: Path) -> list[int]:
        return [json.loads(line)["step"] for line in path.read_text().splitlines()]

    assert steps(tmp_path / "metrics.jsonl") == steps(aside / "metrics.jsonl")  # a run from step 0 again


def test_metrics_without_a_checkpoint_are_refused(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text('{"step": 2048, "rollout/success_rate": 0.5}\n')
    with pytest.raises(RunDirError, match=r"no checkpoint; metrics\.jsonl holds 1 records up to step 2048"):
        resume_or_start(tmp_path)
    assert resume_or_start(tmp_path, restart=True) is None
    assert not (tmp_path / "metrics.jsonl").exists()
    [aside] = tmp_path.glob("restart-*")
    assert (aside / "metrics.jsonl").read_text().startswith('{"step": 2048')
    # A fresh directory, or one whose metrics file is still empty, simply starts.
    (tmp_path / "metrics.jsonl").write_text("")
    assert resume_or_start(tmp_path) is None


def test_restart_still_resumes_a_readable_checkpoint(tmp_path: Path) -> None:
    """Safe in a requeued job's command: the flag only acts where there is nothing to resume."""
    save_checkpoint(tmp_path, {"step": 5})
    save_checkpoint(tmp_path, {"step": 6})
    (tmp_path / "checkpoint.pt").write_bytes(b"torn")  # the newest is torn, the previous one is good
    assert resume_or_start(tmp_path, restart=True) == {"step": 5}
    assert not list(tmp_path.glob("restart-*"))


@pytest.fixture
def before_second_update(monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable[[], None]], None]:
    """``install(action)``: ``SACLearner.update`` calls ``action()`` before its second update (after the
    first scheduled one has trained the models). ``monkeypatch.undo()`` takes it off."""
    from sac_glam.run.learners import SACLearner

    original = SACLearner.update

    def install(action: Callable[[], None]) -> None:
        calls = {"n": 0}

        def update(self: SACLearner, *args: Any, **kwargs: Any) -> Any:
            calls["n"] += 1
            if calls["n"] == 2:
                action()
            return original(self, *args, **kwargs)

        monkeypatch.setattr(SACLearner, "update", update)

    return install


def test_a_run_killed_before_its_first_scheduled_checkpoint_resumes_from_step_0(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    before_second_update: Callable[[Callable[[], None]], None],
) -> None:
    def die() -> None:
        raise KeyboardInterrupt  # as a kill -9 would, without the loop's own checkpoint

    before_second_update(die)
    overrides = [*SHORT, "train.checkpoint_every=1000"]
    with pytest.raises(KeyboardInterrupt):
        train(_cfg("sac_glam_her_cpu", overrides, tmp_path))
    assert (tmp_path / "metrics.jsonl").read_text()  # metrics were logged, only the step-0 checkpoint exists
    assert load_checkpoint(tmp_path)["loop"]["steps"] == 0
    monkeypatch.undo()
    capsys.readouterr()
    assert train(_cfg("sac_glam_her_cpu", overrides, tmp_path)).steps == 48
    assert "resuming" in capsys.readouterr().out


# ------------------------------------------------------------------------------- disk faults


def _failing_write(monkeypatch: pytest.MonkeyPatch, code: int, after_bytes: int = 100) -> None:
    """``os.write`` that writes ``after_bytes`` of the checkpoint, then fails with ``code``."""
    real = os.write
    seen = {"n": 0}

    def write(fd: int, data: Any) -> int:
        if seen["n"] >= after_bytes:
            raise OSError(code, os.strerror(code))
        n = real(fd, bytes(data[: after_bytes - seen["n"]]))
        seen["n"] += n
        return n

    monkeypatch.setattr(ck.os, "write", write)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS])
def test_a_failed_write_leaves_the_previous_checkpoints_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    save_checkpoint(tmp_path, {"step": 1})
    save_checkpoint(tmp_path, {"step": 2})
    before = _bytes(tmp_path)
    if code in (errno.EACCES, errno.EROFS):  # the file cannot even be created (root ignores chmod)
        real_open = os.open
        monkeypatch.setattr(ck.os, "open", lambda p, *a, **k: (_ for _ in ()).throw(OSError(code, os.strerror(code)))
                            if str(p).endswith(".tmp") else real_open(p, *a, **k))  # fmt: skip
    else:
        _failing_write(monkeypatch, code)
    with pytest.raises(CheckpointWriteError) as err:
        save_checkpoint(tmp_path, {"step": 3, "w": torch.zeros(10_000)})
    assert (
        err.value.errno == code and errno.errorcode[code] in str(err.value) and "unchanged" in str(err.value)
    )
    assert _bytes(tmp_path) == before  # no partial checkpoint.pt.tmp left, nothing renamed
    monkeypatch.undo()
    assert load_checkpoint(tmp_path) == {"step": 2}


def test_disk_full_stops_training_and_the_same_command_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_save = ck.save_checkpoint
    saves: list[int] = []

    def save_then_fill(run_dir: Path, state: dict[str, Any]) -> Path:
        saves.append(state["loop"]["steps"])
        if len(saves) == 3:  # step 0, the first scheduled one, then the disk is full
            _failing_write(monkeypatch, errno.ENOSPC)
        return real_save(run_dir, state)

    monkeypatch.setattr("sac_glam.run.train.save_checkpoint", save_then_fill)
    overrides = [*SAC_TINY, "train.checkpoint_every=2"]
    with pytest.raises(RunStopped) as err:
        train(_cfg("sac_glam_her_cpu", overrides, tmp_path))
    assert err.value.code == EXIT_CHECKPOINT_FAILED
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and "No space left on device (ENOSPC)" in line
    assert f"the checkpoint of step {saves[1]} is intact" in line and f"stopped at step {saves[2]}" in line
    monkeypatch.undo()
    assert load_checkpoint(tmp_path)["loop"]["steps"] == saves[1]
    assert not (tmp_path / "checkpoint.pt.tmp").exists()
    assert train(_cfg("sac_glam_her_cpu", overrides, tmp_path)).steps == 96
    assert f"resuming {tmp_path} at step {saves[1]}" in capsys.readouterr().out


def test_the_rename_is_made_durable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def replace(a: Any, b: Any) -> None:
        events.append(f"replace {Path(a).name} -> {Path(b).name}")
        real_replace(a, b)

    monkeypatch.setattr(ck.os, "fsync", fsync)
    monkeypatch.setattr(ck.os, "replace", replace)
    save_checkpoint(tmp_path, {"step": 1})
    save_checkpoint(tmp_path, {"step": 2})
    assert events[-4:] == ["fsync file", "replace checkpoint.pt -> checkpoint.prev.pt",
                           "replace checkpoint.pt.tmp -> checkpoint.pt", "fsync dir"]  # fmt: skip


# ------------------------------------------------------------------------------- CUDA RNG


def test_cuda_rng_state_is_saved_and_restored_when_cuda_is_there(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    assert "cuda" not in ck.rng_state(rng) or torch.cuda.is_available()  # CPU-only: no key at all
    devices = [torch.arange(4, dtype=torch.uint8), torch.arange(4, 8, dtype=torch.uint8)]
    restored: dict[int, torch.Tensor] = {}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [t.clone() for t in devices])
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, device: restored.__setitem__(device, s))
    state = ck.rng_state(rng)
    assert [torch.equal(a, b) for a, b in zip(state["cuda"], devices, strict=True)] == [True, True]
    back = ck.decode(torch.load(_saved(ck.encode(state)), weights_only=True))
    ck.set_rng_state(back, np.random.default_rng(1))
    assert sorted(restored) == [0, 1] and all(torch.equal(restored[i], devices[i]) for i in (0, 1))


def _saved(obj: Any) -> Any:
    from io import BytesIO

    buf = BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return buf


def test_a_preemption_whose_checkpoint_fails_exits_74_not_75(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    before_second_update: Callable[[Callable[[], None]], None],
) -> None:
    """75 would make the SLURM templates requeue the job onto the same full disk."""

    def fill_then_signal() -> None:
        _failing_write(monkeypatch, errno.ENOSPC)  # the disk fills just before the signal
        os.kill(os.getpid(), signal.SIGTERM)

    before_second_update(fill_then_signal)
    with pytest.raises(RunStopped) as err:
        train(_cfg("sac_glam_her_cpu", [*SAC_TINY, "train.checkpoint_every=1000"], tmp_path))
    assert err.value.code == EXIT_CHECKPOINT_FAILED
    assert "the checkpoint of step 0 is intact" in capsys.readouterr().err
