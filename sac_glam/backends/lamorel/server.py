"""What runs in each LLM server: the agent installed in Lamorel's ``HF_LLM``, and the updater that
answers every request of the RL side (the package docstring, "Design" and "Data parallelism")."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from lamorel import BaseModelInitializer, BaseUpdater

from sac_glam.algos.updaters import PPOUpdater, SACUpdater, slice_batch
from sac_glam.backends.build import make_agent, make_updater
from sac_glam.backends.lamorel.module_functions import (
    AgentModuleFunction,
    affix_texts,
    module_function_problems,
)
from sac_glam.config import Config

#: Attribute under which the agent is registered in Lamorel's ``HF_LLM`` module.
AGENT_ATTR = "sac_glam_agent"


class AgentInitializer(BaseModelInitializer):
    """Builds the run's :class:`LLMAgent` in a server and installs it in Lamorel's ``HF_LLM``."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg

    def initialize_model(self, model: Any) -> Any:
        device = torch.device(model.device)
        cfg = self.cfg
        if device.type == "cuda":
            torch.cuda.set_device(device)  # make_agent's "cuda" is this server's GPU
            cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, device="cuda"))
        else:
            cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, device="cpu"))
        agent = make_agent(cfg)  # seeds with train.seed: every server and the local backend agree
        model._LLM_model = agent.llm  # Lamorel's own copy is dropped: one set of weights per server
        model._LLM_tokenizer = agent.tokenizer
        setattr(model, AGENT_ATTR, agent)
        # Lamorel registered the module functions before this initializer ran: hand them the agent.
        for fn in getattr(model, "_module_functions", {}).values():
            if isinstance(fn, AgentModuleFunction):
                fn.bind(agent)
        return model


class GradientAllReduce:
    """Sums ``n_local / n_total``-weighted gradients over the LLM servers before each optimiser step,
    then clips (package docstring, "Data parallelism over servers"). With one server it only clips."""

    def __init__(self, group: Any, world_size: int):
        self.group = group
        self.world_size = world_size
        self.n_local = 0
        self.n_total = 0
        self.last_grad_norm = float("nan")

    def attach(self, optimizer: torch.optim.Optimizer, max_norm: float | None) -> None:
        def hook(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            self._reduce(opt, max_norm)

        optimizer.register_step_pre_hook(hook)

    def _reduce(self, optimizer: torch.optim.Optimizer, max_norm: float | None) -> None:
        params = [p for g in optimizer.param_groups for p in g["params"]]
        if self.world_size > 1:
            self._all_reduce(params)
        if max_norm is not None:
            self.last_grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))

    def _all_reduce(self, params: list[torch.Tensor]) -> None:
        # 1) row counts and which parameters got a gradient anywhere (None must stay None for Adam).
        head = torch.tensor(
            [float(self.n_local)] + [float(p.grad is not None) for p in params], dtype=torch.float64
        )
        dist.all_reduce(head, op=dist.ReduceOp.SUM, group=self.group)
        self.n_total = int(head[0])
        used = [p for p, flag in zip(params, head[1:].tolist(), strict=True) if flag > 0]
        if not used:
            return
        # 2) sum_s (n_s / n) * grad_s = the gradient of the mean loss over all n rows.
        weight = self.n_local / max(self.n_total, 1)
        flat = torch.cat([
            (p.grad.detach().float().cpu() if p.grad is not None else torch.zeros(p.numel())).reshape(-1) * weight
            for p in used
        ])  # fmt: skip
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=self.group)
        offset = 0
        for p in used:
            value = flat[offset : offset + p.numel()].view_as(p).to(device=p.device, dtype=p.dtype)
            offset += p.numel()
            if p.grad is None:
                p.grad = value
            else:
                p.grad.copy_(value)


def _rows(ids: Sequence[int]) -> slice:
    """``_current_batch_ids`` as a slice (Lamorel's chunks are contiguous: ``[3, 4, 5]`` -> ``3:6``)."""
    ids = list(ids)
    if not ids:
        return slice(0, 0)
    if ids != list(range(ids[0], ids[-1] + 1)):
        raise ValueError(f"expected contiguous _current_batch_ids, got {ids[:8]}...")
    return slice(ids[0], ids[-1] + 1)


def _to_cpu(obj: Any) -> Any:
    """Tensors in nested dicts/lists moved to CPU (results cross to RL processes without a GPU)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


class AgentUpdater(BaseUpdater):
    """The server's entry point: ``perform_update(..., method=...)`` acts, updates, saves or loads.

    Wraps the local backend's ``SACUpdater`` / ``PPOUpdater`` (built by ``backends.build.make_updater``) around
    the agent that :class:`AgentInitializer` installed.
    """

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self._agent: Any = None
        self._updater: SACUpdater | PPOUpdater | None = None
        self._sync: GradientAllReduce | None = None

    def _setup(self) -> None:
        module = self._llm_module
        inner = getattr(module, "module", module)  # DDP wraps HF_LLM
        self._agent = getattr(inner, AGENT_ATTR)
        group = getattr(module, "process_group", None)
        world = dist.get_world_size(group=group) if group is not None else 1
        cfg = self.cfg
        # Clipping moves after the all-reduce (the hook clips); PPO advantages arrive normalised over
        # the whole minibatch from the RL side (package docstring).
        if cfg.train.algo == "sac":
            max_norm = cfg.sac.max_grad_norm
            cfg = dataclasses.replace(cfg, sac=dataclasses.replace(cfg.sac, max_grad_norm=None))
        else:
            max_norm = cfg.ppo.max_grad_norm
            cfg = dataclasses.replace(
                cfg, ppo=dataclasses.replace(cfg.ppo, max_grad_norm=math.inf, normalize_advantages=False)
            )
        self._updater = make_updater(cfg, self._agent)
        self._sync = GradientAllReduce(group, world)
        self._sync.attach(self._updater.optimizer, max_norm)
        alpha_optimizer = getattr(getattr(self._updater, "alpha", None), "optimizer", None)
        if alpha_optimizer is not None:
            self._sync.attach(alpha_optimizer, None)

    def perform_update(
        self,
        contexts: list[str],
        candidates: list[list[str]],
        _current_batch_ids: Sequence[int],
        **kwargs: Any,
    ) -> Any:
        if self._updater is None:
            self._setup()
        method = kwargs.pop("method")
        handler: Callable[..., Any] = getattr(self, f"_do_{method}")
        return handler(contexts, candidates, _current_batch_ids, **kwargs)

    def _do_act(
        self, contexts: list[str], candidates: list[list[str]], ids: Sequence[int], value: bool
    ) -> Any:
        if not contexts:
            return None
        with torch.no_grad():
            out = self._agent.evaluate(contexts, candidates, v=value)
        v_B = out.v_B.float().cpu() if out.v_B is not None else None
        return out.log_pi_BA.cpu(), out.mask_BA.cpu(), v_B

    def _do_update(
        self, contexts: list[str], candidates: list[list[str]], ids: Sequence[int], batch: Any
    ) -> Any:
        local = slice_batch(batch, _rows(ids))
        assert self._updater is not None and self._sync is not None
        self._sync.n_local = len(local.prompts)
        stats = self._updater.update(local)
        if "train/grad_norm" in stats:  # PPO: the clipped norm is the all-reduced one
            stats["train/grad_norm"] = self._sync.last_grad_norm
        return {"n": len(local.prompts), "stats": stats}

    def _do_state_dict(
        self, contexts: list[str], candidates: list[list[str]], ids: Sequence[int], want: bool
    ) -> Any:
        if not want:
            return None
        assert self._updater is not None
        return _to_cpu({"agent": self._agent.trainable_state_dict(), "updater": self._updater.state_dict()})

    def _do_load_state_dict(
        self, contexts: list[str], candidates: list[list[str]], ids: Sequence[int], state: dict[str, Any]
    ) -> Any:
        assert self._updater is not None
        self._agent.load_trainable_state_dict(state["agent"])
        self._updater.load_state_dict(state["updater"])
        return None

    def _do_save(
        self, contexts: list[str], candidates: list[list[str]], ids: Sequence[int], path: str | None
    ) -> Any:
        if path is not None:  # one server writes (a shared file system on multi-node runs)
            self._agent.save(path)
        return None

    def _do_module_fn_info(
        self, contexts: list[str], candidates: list[list[str]], ids: Sequence[int], keys: list[str]
    ) -> Any:
        """What :meth:`LamorelBackend.module_outputs` needs before calling the module functions."""
        prefix, suffix = affix_texts(self._agent.tokenizer)
        return {"problems": module_function_problems(self._agent, keys), "prefix": prefix, "suffix": suffix}
