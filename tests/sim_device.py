"""A simulated accelerator for CPU-only CI: catches a CPU tensor meeting a device tensor, as CUDA would.

Inside :func:`simulated_device`, ``x.to(SIM)`` (and any factory called with ``device=SIM``) returns a
:class:`SimTensor`: a wrapper whose reported device is ``meta`` but which holds real CPU data, so
models run and give real numbers. Every aten op is checked the way a CUDA kernel checks its inputs:
a plain CPU tensor with at least one dimension next to a simulated one raises ``DeviceMixError``.
What CUDA allows stays allowed: CPU scalars (0-dim tensors, python numbers), CPU index tensors in
advanced indexing, and explicit copies between devices (``.to``, ``.cpu()``, ``copy_``).

Why ``meta`` and not a fake ``cuda``: on a CPU-only torch build, ``Tensor.to("cuda")`` fails in
Python before dispatch, and the autograd engine has no CUDA queue to run a backward on; ``meta``
tensors run their backward on the CPU queue. The code under test only ever asks
``tensor.device`` / ``model.device``, so any non-CPU device exercises its moves.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

SIM = torch.device("meta")
"""The simulated device: what ``tensor.device`` reports for a tensor moved there."""


class DeviceMixError(RuntimeError):
    """A CPU tensor met a tensor on the simulated device (CUDA raises a RuntimeError here)."""


class SimTensor(torch.Tensor):
    """A tensor on :data:`SIM` whose data is the CPU tensor ``elem``."""

    elem: torch.Tensor

    @staticmethod
    def __new__(cls, elem: torch.Tensor) -> SimTensor:
        r = torch.Tensor._make_wrapper_subclass(  # type: ignore[attr-defined]
            cls,
            elem.shape,
            strides=elem.stride(),
            storage_offset=elem.storage_offset(),
            dtype=elem.dtype,
            layout=elem.layout,
            device=SIM,
            requires_grad=elem.requires_grad,
        )
        r.elem = elem
        return r

    def __repr__(self) -> str:  # type: ignore[override]
        return f"SimTensor({self.elem!r})"

    # A traceable wrapper: ``Module.to`` then swaps each parameter in place (``swap_tensors``), which
    # keeps tied weights tied (T5's ``shared`` / ``lm_head``), as ``param.data = ...`` does on CUDA.
    def __tensor_flatten__(self) -> tuple[list[str], None]:
        return ["elem"], None

    @staticmethod
    def __tensor_unflatten__(inner: dict[str, torch.Tensor], meta: None, size: Any, stride: Any) -> SimTensor:
        return SimTensor(inner["elem"])

    def __reduce_ex__(self, protocol: Any) -> Any:
        # Saved as its CPU data: a checkpoint loads as a CUDA one does with map_location="cpu".
        return self.elem.detach().__reduce_ex__(protocol)

    @classmethod
    def __torch_dispatch__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        return _dispatch(func, args, kwargs or {})


# Ops whose arguments may legally sit on different devices (CUDA accepts these).
_CROSS_DEVICE = {torch.ops.aten.copy_.default, torch.ops.aten._to_copy.default}
# Advanced indexing accepts CPU indices for a CUDA tensor: only ``self`` (and ``values``) are checked.
_INDEXING = {torch.ops.aten.index.Tensor, torch.ops.aten.index_put_.default, torch.ops.aten.index_put.default}


def _check(func: Any, args: Any, kwargs: dict[str, Any]) -> bool:
    """Whether any input is simulated; raises when a non-scalar CPU tensor meets one."""
    checked = (args[0], *args[2:]) if func in _INDEXING else (args, kwargs)
    flat, _ = tree_flatten(checked)
    tensors = [t for t in flat if isinstance(t, torch.Tensor)]
    if not any(isinstance(t, SimTensor) for t in tree_flatten((args, kwargs))[0]):
        return False
    if func in _CROSS_DEVICE:
        return True
    cpu = [t for t in tensors if not isinstance(t, SimTensor) and t.device.type == "cpu" and t.dim() > 0]
    if cpu:
        raise DeviceMixError(
            f"{func}: a CPU tensor of shape {tuple(cpu[0].shape)} meets a tensor on the device "
            "(CUDA: 'Expected all tensors to be on the same device')"
        )
    return True


def _dispatch(func: Any, args: Any, kwargs: dict[str, Any]) -> Any:
    simulated = _check(func, args, kwargs)
    device = kwargs.get("device")
    to_sim = device is not None and torch.device(device) == SIM
    to_cpu = device is not None and torch.device(device).type == "cpu"
    if to_sim:
        kwargs = {**kwargs, "device": torch.device("cpu")}
    args, kwargs = tree_map(lambda t: t.elem if isinstance(t, SimTensor) else t, (args, kwargs))
    out = func(*args, **kwargs)
    if to_sim or (simulated and not to_cpu):
        return tree_map(lambda t: SimTensor(t) if isinstance(t, torch.Tensor) else t, out)
    return out


class _SimMode(TorchDispatchMode):
    """Sees every op, so that factories with ``device=SIM`` (no tensor input) are simulated too."""

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        return _dispatch(func, args, kwargs or {})


class _FromDataMode(TorchFunctionMode):
    """What the dispatcher does not see: ``torch.tensor(data, device=SIM)`` builds its tensor below it
    (a real, empty meta tensor), so build it on the CPU and move it; ``tolist`` reads the CPU data and
    ``numpy`` refuses, as on CUDA."""

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        device = kwargs.get("device")
        if func in _FROM_DATA and device is not None and torch.device(device) == SIM:
            grad = bool(kwargs.get("requires_grad", False))
            cpu = func(*args, **{**kwargs, "device": "cpu", "requires_grad": False})
            return cpu.to(SIM).requires_grad_(grad)  # a leaf, as the original call makes
        if func is torch.Tensor.tolist and isinstance(args[0], SimTensor):
            return args[0].elem.tolist()
        if func is torch.Tensor.numpy and isinstance(args[0], SimTensor):
            raise TypeError("can't convert a device tensor to numpy: use .cpu() first (as on CUDA)")
        return func(*args, **kwargs)


_FROM_DATA = {torch.tensor, torch.as_tensor, torch.asarray}


@contextmanager
def simulated_device() -> Iterator[torch.device]:
    """Run the body with :data:`SIM` as a separate device; yields it (``module.to(...)`` it)."""
    with _FromDataMode(), _SimMode():
        yield SIM
