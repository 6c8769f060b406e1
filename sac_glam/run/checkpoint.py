"""Checkpoints: one manifest with everything needed to continue exactly (style point 11).

**Data, not code.** A checkpoint is ``torch.save`` of tensors and plain Python data (dict, list, tuple,
str, int, float, bool, None); numpy arrays and numpy scalars are stored as tagged tensors and come back
with their dtype. It is read with ``torch.load(weights_only=True)``, whose unpickler builds only those
types, so loading a checkpoint from a shared results directory cannot run code: a file that names any
other Python object (a class, ``os.system``, ...) is refused, naming it, before anything in it runs.
Anything else handed to :func:`save_checkpoint` (a dataclass, a deque, a NamedTuple) is a ``TypeError``
at save time naming where it sits, so a checkpoint that saves is a checkpoint that loads.

**Writing.** ``checkpoint.pt.tmp`` is written and fsynced, the current ``checkpoint.pt`` is renamed to
``checkpoint.prev.pt``, the new file is renamed into place, and the directory is fsynced so that the
renames survive a crash of the machine. A write that fails (no space, quota, permissions, read-only
file system) removes the partial temporary file and raises :class:`CheckpointWriteError`; the
previous checkpoints are untouched. A file that fails to load (truncated, corrupt) is reported and
the previous one is used.

:func:`resume_or_start` decides what a run directory means: resume from its newest readable
checkpoint, start at step 0 in a fresh directory, or refuse (:class:`RunDirError`) to start again
over a run it cannot resume, unless asked to, in which case the old files are moved aside.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import pickle
import pickletools
import random
import time
import zipfile
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sac_glam.run.logging import METRICS_FILE, read_metrics

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"
TEMPORARY = CHECKPOINT + ".tmp"
#: Version of the manifest layout; 1 was a pickle of Python objects (loadable only with weights_only=False).
FORMAT = 2
#: What a run writes in its directory; ``train.restart=true`` moves these aside (never deletes them).
RUN_FILES = (CHECKPOINT, PREVIOUS, TEMPORARY, METRICS_FILE, "metrics.csv", "tb", "config.yaml",
             "result.json", "success.png", "final")  # fmt: skip

# A dict holding exactly one of these keys is an encoded numpy array / scalar (the names are long
# enough that no state dict of the project uses them as keys).
_ARRAY = "__sac_glam_ndarray__"
_SCALAR = "__sac_glam_npscalar__"


class CheckpointWriteError(OSError):
    """A checkpoint could not be written; the previous checkpoint files are unchanged."""


class RunDirError(ValueError):
    """The run directory holds a run that cannot be resumed (and starting over would overwrite it)."""


class UnsafeCheckpointError(RunDirError):
    """A checkpoint file holds Python objects, not only tensors and plain data: it is not loaded."""


# ------------------------------------------------------------------------------------ encoding


def encode(obj: Any, where: str = "state") -> Any:
    """``obj`` with numpy arrays and scalars replaced by tagged tensors; ``TypeError`` naming the path
    of anything that ``torch.load(weights_only=True)`` would refuse.

    Exact types are checked, not ``isinstance``: a NamedTuple or an ``np.float64`` (a ``float``
    subclass) would be pickled as its class and refused at load time.
    """
    kind = type(obj)
    if obj is None or kind in (bool, int, float, str, bytes):
        return obj
    if isinstance(obj, torch.Tensor):
        if kind not in (torch.Tensor, torch.nn.Parameter):
            raise TypeError(f"{where}: tensor subclass {kind.__qualname__} cannot be checkpointed as data")
        return obj
    if isinstance(obj, np.ndarray | np.generic):
        if obj.dtype.kind not in "biufc":
            raise TypeError(
                f"{where}: numpy dtype {obj.dtype} (only bool and numbers) cannot be checkpointed"
            )
        array = np.asarray(obj)  # a scalar becomes a 0-d array; shapes (0-d included) are kept
        if not (array.flags.c_contiguous and array.flags.writeable):
            array = array.copy(order="C")  # from_numpy needs positive strides (and warns if read-only)
        tensor = torch.from_numpy(array)
        return {_SCALAR: tensor} if isinstance(obj, np.generic) else {_ARRAY: tensor}
    if isinstance(obj, dict):  # dict, OrderedDict (module state dicts), defaultdict: all become dicts
        out = {}
        for k, v in obj.items():
            if k is not None and type(k) not in (bool, int, float, str):
                raise TypeError(f"{where}: key {k!r} of type {type(k).__qualname__} (str, int, float, bool)")
            out[k] = encode(v, f"{where}[{k!r}]")
        return out
    if kind in (list, tuple):
        return kind(encode(v, f"{where}[{i}]") for i, v in enumerate(obj))
    raise TypeError(
        f"{where}: {kind.__module__}.{kind.__qualname__} cannot be checkpointed as data; convert it to "
        "tensors, numpy arrays and dict/list/tuple/str/int/float/bool/None in its state_dict()"
    )


def decode(obj: Any) -> Any:
    """Inverse of :func:`encode`: tagged tensors become numpy arrays / scalars of the saved dtype."""
    if isinstance(obj, dict):
        if len(obj) == 1 and _ARRAY in obj:
            return obj[_ARRAY].numpy()
        if len(obj) == 1 and _SCALAR in obj:
            return obj[_SCALAR].numpy()[()]
        return {k: decode(v) for k, v in obj.items()}
    if type(obj) in (list, tuple):
        return type(obj)(decode(v) for v in obj)
    return obj


# ------------------------------------------------------------------------------------ RNG states


def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    """The loop's numpy generator, torch's CPU generator, Python's ``random`` and, on a CUDA host, every
    CUDA device's generator (absent key on a CPU-only host)."""
    state: dict[str, Any] = {
        "numpy": rng.bit_generator.state,
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], rng: np.random.Generator) -> None:
    """Restore :func:`rng_state` output (a run resumed on another device kind restores what it can)."""
    rng.bit_generator.state = state["numpy"]
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        if len(cuda) != torch.cuda.device_count():
            log.warning("checkpoint has %d CUDA RNG states, this host %d devices: restoring the first %d",
                        len(cuda), torch.cuda.device_count(), min(len(cuda), torch.cuda.device_count()))  # fmt: skip
        for device, s in enumerate(cuda[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s, device)
    elif cuda is not None:
        log.warning(
            "checkpoint was written on a CUDA host and is resumed without CUDA: CUDA RNG not restored"
        )


# ------------------------------------------------------------------------------------ files


def _fsync_dir(directory: Path) -> None:
    """Make renames in ``directory`` durable (POSIX: a rename is persisted by an fsync of its directory)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path: Path, data: memoryview) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        written = 0
        while written < len(data):
            written += os.write(fd, data[written:])
        os.fsync(fd)
    finally:
        os.close(fd)


def _describe(err: OSError) -> str:
    name = errno.errorcode.get(err.errno or 0, "")
    return f"{err.strerror or err} ({name})" if name else str(err)


def save_checkpoint(run_dir: str | Path, state: dict[str, Any]) -> Path:
    """Durably write ``state`` to ``run_dir/checkpoint.pt``, keeping the last good one as ``.prev``.

    Raises :class:`CheckpointWriteError` (the previous files untouched) when the disk refuses.
    """
    run_dir = Path(run_dir)
    path, prev, tmp = run_dir / CHECKPOINT, run_dir / PREVIOUS, run_dir / TEMPORARY
    # Serialise in memory first: a type error then never touches the disk, and an I/O error surfaces
    # as the OSError of a plain write rather than inside torch's zip writer.
    buffer = BytesIO()
    torch.save({"format": FORMAT, **encode(state)}, buffer)
    try:
        _write_durably(tmp, buffer.getbuffer())
    except OSError as err:
        # Give back the space a partial file holds (a read-only file system has none to give back).
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise CheckpointWriteError(
            err.errno, f"cannot write {tmp}: {_describe(err)}; {path} and {prev} are unchanged"
        ) from err
    try:
        if path.exists():
            os.replace(path, prev)
        os.replace(tmp, path)
        _fsync_dir(run_dir)
    except OSError as err:
        # Only a rename or the directory fsync failed: the newest complete file is still on disk
        # (checkpoint.pt, or checkpoint.pt.tmp beside checkpoint.prev.pt, which loading falls back to).
        raise CheckpointWriteError(err.errno, f"cannot rename {tmp} to {path}: {_describe(err)}") from err
    return path


def _unsafe_globals(path: Path) -> list[str]:
    """The Python objects a refused file would import, found by disassembly (nothing in it is run)."""
    try:
        if zipfile.is_zipfile(path):  # torch.save's format: torch lists what weights_only refuses
            return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
        names: list[str] = []
        strings: list[str] = []
        for op, arg, _ in pickletools.genops(path.read_bytes()):  # a bare pickle
            if op.name in ("GLOBAL", "INST"):
                names.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                names.append(f"{strings[-2]}.{strings[-1]}")
            if isinstance(arg, str):
                strings.append(arg)
    except Exception:  # a corrupt file may stop the disassembly: keep what was found
        pass
    return [n for n in names if not n.startswith("torch.") and n != "collections.OrderedDict"]


def read_checkpoints(run_dir: str | Path) -> tuple[dict[str, Any] | None, list[str]]:
    """(newest loadable checkpoint or None, one line per checkpoint file that exists but cannot be read;
    the caller reports them).

    Raises :class:`UnsafeCheckpointError` for a file that names Python objects: it is never run, and
    not silently skipped either (someone or something put code into the run directory).
    """
    run_dir = Path(run_dir)
    problems: list[str] = []
    for name in (CHECKPOINT, PREVIOUS):
        path = run_dir / name
        if not path.exists():
            continue
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        # The weights-only unpickler builds nothing but data, so any error means the file is unusable;
        # a refused global is told apart from corruption only to word the message.
        except Exception as err:
            unsafe = _unsafe_globals(path) if isinstance(err, pickle.UnpicklingError) else []
            if unsafe:
                shown = ", ".join(unsafe[:8]) + (f" and {len(unsafe) - 8} more" if len(unsafe) > 8 else "")
                raise UnsafeCheckpointError(
                    f"{path} holds Python objects ({shown}), not only tensors and plain data: it is "
                    "refused without being run (loading such a pickle can execute code; a checkpoint of "
                    "sac-glam before checkpoint format 2 also looks like this). Pass train.restart=true "
                    "to move the run's files aside and start over, or use another train.run_dir"
                ) from err
            why = str(err).split("\n")[0][:200] if isinstance(err, RuntimeError | OSError) else "corrupt data"
            problems.append(f"{name} cannot be read ({type(err).__name__}: {why})")
        else:
            if isinstance(raw, dict) and raw.get("format") == FORMAT:
                state: dict[str, Any] = decode({k: v for k, v in raw.items() if k != "format"})
                return state, problems
            got = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
            problems.append(f"{name} has checkpoint format {got!r}, expected {FORMAT}")
    return None, problems


def load_checkpoint(run_dir: str | Path) -> dict[str, Any] | None:
    """The newest loadable checkpoint of a run directory, or None when there is none."""
    state, problems = read_checkpoints(run_dir)
    _report_fallback(state, problems)
    return state


def _report_fallback(state: dict[str, Any] | None, problems: list[str]) -> None:
    if state is not None and problems:
        log.warning("%s; using %s", problems[0], PREVIOUS)


# ------------------------------------------------------------------------------------ run directory


def move_aside(run_dir: Path) -> Path:
    """Move the run's files (:data:`RUN_FILES`) into ``run_dir/restart-<UTC time>/``; returns it."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = run_dir / f"restart-{stamp}"
    n = 1
    while aside.exists():
        aside, n = run_dir / f"restart-{stamp}-{n}", n + 1
    aside.mkdir()
    for name in RUN_FILES:
        if (run_dir / name).exists():
            os.replace(run_dir / name, aside / name)
    _fsync_dir(run_dir)
    return aside


def resume_or_start(run_dir: str | Path, restart: bool = False) -> dict[str, Any] | None:
    """The checkpoint to resume from, or None to start at step 0.

    A readable checkpoint is always resumed (so ``restart`` is safe to leave in a requeued job's
    command). With none, a directory holding unreadable checkpoints or logged metrics is a run that
    starting over would overwrite: :class:`RunDirError`, unless ``restart``, which moves its files
    aside first.
    """
    run_dir = Path(run_dir)
    try:
        state, problems = read_checkpoints(run_dir)
    except UnsafeCheckpointError as err:
        if not restart:
            raise
        state, problems = None, [str(err)]
    if state is not None:
        _report_fallback(state, problems)
        return state
    metrics = read_metrics(run_dir / METRICS_FILE) if (run_dir / METRICS_FILE).exists() else []
    if not problems and not metrics:
        return None  # a new directory, or one killed before its step-0 checkpoint: nothing to lose
    found = "; ".join(problems) if problems else "no checkpoint"
    if metrics:
        found += f"; {METRICS_FILE} holds {len(metrics)} records up to step {int(metrics[-1]['step'])}"
    if not restart:
        raise RunDirError(
            f"run directory {run_dir} holds a run that cannot be resumed ({found}). Starting again at step 0 would "
            f"overwrite it: pass train.restart=true to move its files into {run_dir}/restart-<time>/ "
            "and start over, or use another train.run_dir"
        )
    aside = move_aside(run_dir)
    print(f"restarting {run_dir} at step 0 (train.restart=true; {found}): the previous run's files are "
          f"in {aside}", flush=True)  # fmt: skip
    return None
