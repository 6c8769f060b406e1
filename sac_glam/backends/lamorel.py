"""The ``lamorel`` backend: the same agent and updaters inside Lamorel's LLM server processes.

Lamorel (github.com/flowersteam/lamorel) is imported only in this module. The launcher starts
``n_rl + n_llm`` copies of ``experiments/lamorel_rl_script.py``; ranks ``0..n_rl-1`` are RL processes,
the others LLM servers that serve until the RL side closes them (``docs/lamorel_facts.md``).

Design: every server runs OUR forward
-------------------------------------
- :class:`AgentInitializer` (a ``BaseModelInitializer``) builds, in each server, the very
  :class:`~sac_glam.llm.agent.LLMAgent` the local backend builds (``factory.make_agent``: same seed,
  same LoRA / 4-bit code in ``llm/models.py``), and installs it in Lamorel's ``HF_LLM``: the agent's
  LLM and tokenizer replace the ones Lamorel loaded (one copy of the weights per server), and the agent
  is registered as the submodule ``sac_glam_agent``, so the DDP wrapper Lamorel builds around
  ``HF_LLM`` holds our parameters and broadcasts them from the first server at start-up.
- :class:`AgentUpdater` (a ``BaseUpdater``) is the one entry point the RL side calls, through
  ``caller.update(contexts, candidates, method=...)``: ``act`` (log pi and V through
  ``LLMAgent.evaluate``, no grad), ``update`` (``SACUpdater`` / ``PPOUpdater`` from
  ``algos/updaters.py``, unchanged), ``state_dict``, ``load_state_dict`` and ``save``. Acting does not
  use ``caller.score`` nor a ``BaseModuleFunction``: Lamorel's forward tokenizes and pads on its own
  (pad id hard-coded to 0, causal contexts left-padded without position ids, decoder start id 0), so
  acting through it would run a second scorer with those defects. An updater call reaches the server
  with the raw text and no forward at all: this is the exact path, for every model family.
  No loss, scorer or head is implemented twice: everything numeric is the local backend's code.

Module functions: the Lamorel-native path
-----------------------------------------
Every server also registers three ``BaseModuleFunction``s with its ``Caller``, for what Lamorel users
expect (``caller.custom_module_fns([...], contexts, candidates=...)``) and for
:meth:`LamorelBackend.module_outputs`. They read Lamorel's own forward outputs and apply the agent that
:class:`AgentInitializer` installed (the same instance: no second copy of any head):

- ``"log_pi"`` (:class:`LogPiFunction`): log pi of every candidate under ``model.normalization``,
  from the candidate tokens' logits: the decision logits of our scorer's module docstring, fed to the
  normalisation code of ``llm/scoring.py`` (``summed_token_logp``, ``normalize_scores``, ``_allowed_sets``,
  ``_constrained_log_pi``; see :func:`rows_log_pi`).
- ``"q"`` (:class:`QFunction`): the agent's online Q heads on the decoder's last-layer state at the
  last candidate token (what ``ActionForward.action_hidden_BAH`` is for our scorer), or on its state at
  the start position for ``critic.input=prompt``; per row, ``(n_critics,)``.
- ``"value"`` (:class:`ValueFunction`): the value head on the prompt state (decoder at the start
  position, ``ActionForward.prompt_hidden_BH``); needs an agent with a value head (PPO).

Exact only where Lamorel's forward is the one our scorer runs, i.e. seq2seq models whose
``decoder_start_token_id`` is Lamorel's hard-coded 0 (T5 / Flan-T5: pad = decoder start = 0). Then its
remaining differences do not matter: the pad id is masked everywhere (the functions read candidate
lengths from the attention mask, not from the pad id, so a real token 0 is kept), and Lamorel
tokenizing contexts without special tokens is undone by appending the tokenizer's special text (T5:
``</s>``) to each context, which :meth:`LamorelBackend.module_outputs` does and the functions check
(they check those special tokens, not the rest of the context's tokenisation). Parity with
``LLMAgent.evaluate`` is tested on the tiny T5 with a pad-first tokenizer (``tests/test_lamorel.py``).
Causal models are refused: Lamorel left-pads their contexts without position ids, so on absolute
positions (GPT-2) a row's outputs change with the other contexts of the call (up to 0.7 nats,
``docs/lamorel_facts.md``); use :meth:`LamorelBackend.act`. Our tiny word tokenizer puts a real word at id 0
and the tiny T5's decoder starts at its pad id, so the tiny preset is refused too, unless its tokenizer
is built with ``specials_first=True`` (the parity test's setting).

Data parallelism over servers
-----------------------------
The agent's forward does not go through Lamorel's DDP wrapper (DDP averages gradients only for
forwards made through it), so :class:`GradientAllReduce` averages them explicitly over the LLM
process group, once per optimiser step (an optimiser step pre-hook): one small all-reduce of the row
count and of which parameters have a gradient, then one all-reduce of all gradients flattened into a
buffer. Each server's gradient is the mean over its rows, so it is weighted by its share of the rows,
``n_local / n_total``: the sum is then exactly the gradient of the full batch's mean loss, even when
the rows do not split evenly (DDP's plain average is exact only for equal shards). The collectives
happen per optimiser step, not per ``backward()``, so servers may run different numbers of
accumulation chunks (``chunk_slices`` of different shard sizes) without the hang of ``docs/lamorel_facts.md``; the
number of optimiser steps per call is the same on every server by construction. Two more things make
the sharded step equal the full-batch step: gradient clipping moves after the all-reduce (DDP order:
clip the averaged gradient; the wrapped updater is given an infinite / no clipping norm and the hook
clips), and PPO's per-minibatch advantage normalisation happens on the RL side over the whole
minibatch before it is split. SAC's entropy coefficient gets the same weighted all-reduce. All servers
then apply identical gradients to identical parameters and stay identical (``server_states``).

Process layout
--------------
On Lamorel's main branch, one RL process with several servers (the "batches" dispatch, the only one
that fills ``_current_batch_ids`` with a part of a call) fails on the first call with a ``KeyError``
in the dispatcher. So multi-server configs use ``n_rl_processes == n_llm_processes``: each RL process
issues its own call, and Lamorel routes call ``i`` to server ``i`` whole. Only RL rank 0 runs the
training loop; the other RL ranks are thin relays (:func:`serve_follower`): rank 0 splits every batch
into ``n_rl`` contiguous shards, hands them out over the RL process group, every RL rank sends its shard
to its server, and rank 0 gathers the results. The updater still selects its rows with
``_current_batch_ids`` (all rows of its call here; a part of it once the upstream dispatcher is fixed
and ``n_rl < n_llm`` is used), so it works in both dispatch modes.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from lamorel import BaseModelInitializer, BaseModuleFunction, BaseUpdater, Caller, lamorel_init
from omegaconf import OmegaConf
from torch import Tensor

from sac_glam.algos import ppo
from sac_glam.algos.updaters import PPOUpdater, SACUpdater, slice_batch
from sac_glam.backends.base import ActOutput
from sac_glam.buffers.rollout import PPOBatch
from sac_glam.config import Config, ConfigError
from sac_glam.llm.heads import PromptInputQ
from sac_glam.llm.models import base_model
from sac_glam.llm.scoring import (
    ActionForward,
    _allowed_sets,
    _constrained_log_pi,
    normalize_scores,
    rows_to_BA,
    summed_token_logp,
    tokenize_actions,
)

#: Attribute under which the agent is registered in Lamorel's ``HF_LLM`` module.
AGENT_ATTR = "sac_glam_agent"

#: Every ``lamorel_args`` key Lamorel reads without a default (``docs/lamorel_facts.md``), dotted.
REQUIRED_LAMOREL_KEYS = (
    "log_level",
    "gloo_timeout",
    "allow_subgraph_use_whith_gradient",
    "distributed_setup_args.n_rl_processes",
    "distributed_setup_args.n_llm_processes",
    "accelerate_args.config_file",
    "accelerate_args.machine_rank",
    "accelerate_args.num_machines",
    "llm_args.model_type",
    "llm_args.model_path",
    "llm_args.pretrained",
    "llm_args.minibatch_size",
    "llm_args.pre_encode_inputs",
    "llm_args.load_in_4bit",
    "llm_args.seed",
    "llm_args.parallelism.use_gpu",
    "llm_args.parallelism.model_parallelism_size",
    "llm_args.parallelism.synchronize_gpus_after_scoring",
    "llm_args.parallelism.empty_cuda_cache_after_scoring",
)

_ACTIVE: LamorelBackend | None = None


def missing_lamorel_keys(lamorel_args: dict[str, Any]) -> list[str]:
    """The :data:`REQUIRED_LAMOREL_KEYS` absent from ``lamorel_args``."""
    missing = []
    for key in REQUIRED_LAMOREL_KEYS:
        node: Any = lamorel_args
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                missing.append(key)
                break
            node = node[part]
    return missing


def process_layout(cfg: Config) -> tuple[int, int]:
    """``(n_rl_processes, n_llm_processes)``, checked against Lamorel's dispatcher bug (``docs/lamorel_facts.md``)."""
    setup = cfg.lamorel_args.get("distributed_setup_args", {})
    n_rl, n_llm = int(setup.get("n_rl_processes", 1)), int(setup.get("n_llm_processes", 1))
    if n_rl < 1 or n_llm < 1:
        raise ConfigError(
            f"lamorel_args.distributed_setup_args: need >= 1 RL and LLM process, got {n_rl}, {n_llm}"
        )
    if n_rl < n_llm:
        raise ConfigError(
            f"lamorel_args.distributed_setup_args: n_rl_processes={n_rl} < n_llm_processes={n_llm} hits "
            "Lamorel's dispatcher bug (KeyError 'instruction' on the first call); set "
            "n_rl_processes = n_llm_processes: the extra RL processes only relay shards of rank 0's calls"
        )
    return n_rl, n_llm


# ---------------------------------------------------------------------------------------------------
# LLM server side
# ---------------------------------------------------------------------------------------------------


class AgentInitializer(BaseModelInitializer):
    """Builds the run's :class:`LLMAgent` in a server and installs it in Lamorel's ``HF_LLM``."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg

    def initialize_model(self, model: Any) -> Any:
        from sac_glam.factory import make_agent

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
    then clips (module docstring). With one server it only clips."""

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

    Wraps the local backend's ``SACUpdater`` / ``PPOUpdater`` (built by ``factory.make_updater``) around
    the agent that :class:`AgentInitializer` installed.
    """

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self._agent: Any = None
        self._updater: SACUpdater | PPOUpdater | None = None
        self._sync: GradientAllReduce | None = None

    def _setup(self) -> None:
        from sac_glam.factory import make_updater

        module = self._llm_module
        inner = getattr(module, "module", module)  # DDP wraps HF_LLM
        self._agent = getattr(inner, AGENT_ATTR)
        group = getattr(module, "process_group", None)
        world = dist.get_world_size(group=group) if group is not None else 1
        cfg = self.cfg
        # Clipping moves after the all-reduce (the hook clips); PPO advantages arrive normalised over
        # the whole minibatch from the RL side (module docstring).
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


# ---------------------------------------------------------------------------------------------------
# Module functions: the Lamorel-native path (module docstring, "Module functions")
# ---------------------------------------------------------------------------------------------------

LOG_PI_FN = "log_pi"
Q_FN = "q"
VALUE_FN = "value"
#: The keys of the module functions every server registers (:func:`make_module_functions`).
MODULE_FUNCTION_KEYS = (LOG_PI_FN, Q_FN, VALUE_FN)
#: Lamorel's ``HF_LLM.pad_token`` on main: hard-coded, and also the first decoder input of seq2seq rows.
LAMOREL_PAD_ID = 0


@dataclasses.dataclass
class LamorelRows:
    """One minibatch of Lamorel's seq2seq forward, in our scorer's terms (R rows = (context, candidate)
    pairs in Lamorel's flat order; L = the longest candidate of the minibatch)."""

    logits_RPV: Tensor
    """(R, L+1, V) float decision logits: position j = next-token logits after the context and the
    candidate's first j tokens (the decoder reads ``[0] + candidate``)."""
    ids_RL: Tensor
    """(R, L) candidate token ids; padding (Lamorel's 0) where ``mask_RL`` is False."""
    mask_RL: Tensor
    """(R, L) bool, from the decoder attention mask (not from the pad id: a real token 0 counts)."""
    lengths_R: Tensor
    """(R,) long: number of tokens of each candidate."""
    hidden_RPH: Tensor | None
    """(R, L+1, H) decoder last-layer hidden states (Lamorel asks for them for custom functions)."""

    def action_hidden(self) -> Tensor:
        """(R, H): the state after the start token and the whole candidate (``action_hidden_BAH``)."""
        if self.hidden_RPH is None:
            raise ValueError("Lamorel's forward returned no decoder hidden states")
        rows = torch.arange(self.hidden_RPH.shape[0], device=self.hidden_RPH.device)
        return self.hidden_RPH[rows, self.lengths_R.to(self.hidden_RPH.device)]

    def prompt_hidden(self) -> Tensor:
        """(R, H): the state at the start position, which sees the context only (``prompt_hidden_BH``)."""
        if self.hidden_RPH is None:
            raise ValueError("Lamorel's forward returned no decoder hidden states")
        return self.hidden_RPH[:, 0]


def _output(forward_outputs: Any, name: str) -> Any:
    """A field of the model output (a transformers ``ModelOutput``, or a plain dict in unit tests)."""
    if isinstance(forward_outputs, dict):
        return forward_outputs.get(name)
    return getattr(forward_outputs, name, None)


def seq2seq_rows(forward_outputs: Any, minibatch: dict[str, Any]) -> LamorelRows:
    """Lamorel's seq2seq minibatch (``decoder_input_ids`` = ``[0] + candidate``, right-padded) and the
    model's outputs on it, as :class:`LamorelRows`."""
    dec_ids = minibatch["decoder_input_ids"]
    dec_mask = minibatch["decoder_attention_mask"].bool()
    ids_RL, mask_RL = dec_ids[:, 1:], dec_mask[:, 1:]
    lengths_R = mask_RL.sum(1)
    if bool((lengths_R == 0).any()):
        raise ValueError("a candidate without tokens (an empty string?): every action needs >= 1 token")
    hidden = _output(forward_outputs, "decoder_hidden_states")
    return LamorelRows(
        logits_RPV=_output(forward_outputs, "logits").float(),
        ids_RL=ids_RL,
        mask_RL=mask_RL,
        lengths_R=lengths_R,
        hidden_RPH=hidden[-1] if hidden is not None else None,
    )


def rows_log_pi(rows: LamorelRows, n_actions: list[int], normalization: str, tokenizer: Any) -> Tensor:
    """(R,) log pi of every row, the rows of context b being its ``n_actions[b]`` candidates in order.

    The computation of ``forward_actions`` on the same decision logits: eq. 1's summed token
    log-probs, then ``normalize_scores`` over each context's candidates (``sum``; ``mean`` divides by
    the token counts first), or ``_constrained_log_pi`` over each context's prefix tree (``constrained``).
    """
    logits_RPV, ids_RL, mask_RL, lengths_R = rows.logits_RPV, rows.ids_RL, rows.mask_RL, rows.lengths_R
    n_rows = ids_RL.shape[0]
    if sum(n_actions) != n_rows or min(n_actions, default=0) < 1:
        raise ValueError(f"{n_rows} rows but candidates per context {n_actions}")
    device = logits_RPV.device
    if normalization == "constrained":
        seqs = [tuple(row[:n]) for row, n in zip(ids_RL.tolist(), lengths_R.tolist(), strict=True)]
        chunk, allowed, start = [], [], 0
        for b, n in enumerate(n_actions):
            chunk.append((b, 0, n))
            allowed.append(_allowed_sets(tuple(seqs[start : start + n]), tokenizer.eos_token_id))
            start += n
        return _constrained_log_pi(
            logits_RPV, ids_RL, mask_RL, lengths_R.to(device), chunk, allowed, tokenizer
        )
    B, A = len(n_actions), max(n_actions)
    slot_R = torch.cat([torch.arange(n) + b * A for b, n in enumerate(n_actions)]).to(device)
    mask_BA = rows_to_BA(torch.ones(n_rows, dtype=torch.bool, device=device), slot_R, B, A)
    logp_BA = rows_to_BA(summed_token_logp(logits_RPV, ids_RL, mask_RL), slot_R, B, A)
    n_tokens_BA = rows_to_BA(lengths_R.to(device), slot_R, B, A)
    return normalize_scores(logp_BA, mask_BA, n_tokens_BA, normalization).view(-1).index_select(0, slot_R)


def special_affixes(tokenizer: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The token ids the tokenizer adds before and after a text with ``add_special_tokens=True``
    (T5: ``((), (eos,))``; our word tokenizer: ``((), ())``). Lamorel tokenizes contexts without them,
    our scorer with them."""
    probe = "a"
    plain = list(tokenizer(probe, add_special_tokens=False)["input_ids"])
    full = list(tokenizer(probe, add_special_tokens=True)["input_ids"])
    for i in range(len(full) - len(plain) + 1):
        if full[i : i + len(plain)] == plain:
            return tuple(full[:i]), tuple(full[i + len(plain) :])
    raise ValueError(f"cannot locate {plain} in {full}: unknown special-token layout")


def affix_texts(tokenizer: Any) -> tuple[str, str]:
    """:func:`special_affixes` as texts to put around each context (T5: ``("", "</s>")``)."""
    prefix, suffix = special_affixes(tokenizer)
    return (
        "".join(tokenizer.convert_ids_to_tokens(list(prefix))),
        "".join(tokenizer.convert_ids_to_tokens(list(suffix))),
    )


def module_function_problems(agent: Any, keys: Sequence[str]) -> list[str]:
    """Why the module functions ``keys`` would not be exact for ``agent`` ([] if they are)."""
    problems = []
    unknown = [k for k in keys if k not in MODULE_FUNCTION_KEYS]
    if unknown:
        problems.append(f"unknown module functions {unknown}; known: {list(MODULE_FUNCTION_KEYS)}")
    if agent.family != "seq2seq":
        problems.append(
            "causal models are not supported: Lamorel left-pads causal contexts without position ids, so "
            "a row's outputs would depend on the other contexts of the call (docs/lamorel_facts.md); use "
            "LamorelBackend.act (our exact scorer)"
        )
    else:
        start = base_model(agent.llm).config.decoder_start_token_id
        if start != LAMOREL_PAD_ID:
            problems.append(
                f"Lamorel starts every decoder row with token {LAMOREL_PAD_ID} (its hard-coded pad id), "
                f"but this model's decoder_start_token_id is {start}: Lamorel's forward is not the model's "
                "(exact for T5-like models, pad = decoder start = 0; our tiny word tokenizer only with "
                "build_word_tokenizer(..., specials_first=True)); use LamorelBackend.act"
            )
    if Q_FN in keys and agent.critic_llm is not None:
        problems.append(
            "critic.share_llm=false: the Q heads read a separate critic LLM, not the LLM Lamorel runs"
        )
    if VALUE_FN in keys and agent.value is None:
        problems.append("this agent has no value head (only PPO builds one)")
    return problems


class AgentModuleFunction(BaseModuleFunction):
    """A ``BaseModuleFunction`` applying the agent :class:`AgentInitializer` installed.

    Lamorel calls ``initialize()`` before the model initializer runs, so the agent arrives later, through
    :meth:`bind`; it is held in a plain list, not as a submodule: no second copy of the agent in
    Lamorel's module tree, state dict or DDP wrapper.
    """

    key: str = ""

    def __init__(self) -> None:
        super().__init__()
        self._bound: list[Any] = []
        self._affixes: tuple[tuple[int, ...], tuple[int, ...]] | None = None

    def initialize(self) -> None:
        pass

    def bind(self, agent: Any) -> None:
        self._bound[:] = [agent]
        self._affixes = special_affixes(agent.tokenizer)

    @property
    def agent(self) -> Any:
        if not self._bound:
            raise RuntimeError(f"module function {self.key!r} has no agent: AgentInitializer binds it")
        return self._bound[0]

    def rows(
        self, forward_outputs: Any, minibatch: dict[str, Any], tokenized_contexts: list[Any]
    ) -> LamorelRows:
        """The minibatch as :class:`LamorelRows`, after checking that its forward was our scorer's."""
        problems = module_function_problems(self.agent, [self.key])
        if problems:
            raise ValueError(f"module function {self.key!r}: " + "; ".join(problems))
        if "decoder_input_ids" not in minibatch:
            raise ValueError(f"module function {self.key!r}: not a seq2seq minibatch")
        start = minibatch["decoder_input_ids"][:, 0]
        if bool((start != LAMOREL_PAD_ID).any()):
            raise ValueError(f"decoder rows start with {start.tolist()}, expected {LAMOREL_PAD_ID}")
        self._check_contexts(tokenized_contexts)
        return seq2seq_rows(forward_outputs, minibatch)

    def _check_contexts(self, tokenized_contexts: list[Any]) -> None:
        """Each context must carry the special tokens our scorer adds (Lamorel adds none)."""
        assert self._affixes is not None
        prefix, suffix = self._affixes
        if not prefix and not suffix:
            return
        seen: set[int] = set()
        for ctx in tokenized_contexts:
            if id(ctx) in seen:  # Lamorel repeats one dict per candidate of a context
                continue
            seen.add(id(ctx))
            ids = [t for t, m in zip(ctx["input_ids"], ctx["attention_mask"], strict=True) if m]
            if tuple(ids[: len(prefix)]) != prefix or tuple(ids[len(ids) - len(suffix) :]) != suffix:
                before, after = affix_texts(self.agent.tokenizer)
                raise ValueError(
                    f"a context tokenized as {ids[:4]}...{ids[-4:]} lacks the special tokens our scorer "
                    f"adds ({list(prefix)} before, {list(suffix)} after): Lamorel tokenizes contexts "
                    f"without them, so write them into the text ({before!r} + context + {after!r}); "
                    "LamorelBackend.module_outputs does"
                )

    def row_actions(
        self, actions: list[list[str]] | None, tokenized_contexts: list[Any], rows: LamorelRows
    ) -> list[int]:
        """Candidates per context, from the ``actions`` keyword (the call's candidates again: Lamorel
        does not hand them to module functions), checked against the minibatch."""
        if actions is None:
            raise ValueError(
                f"module function {self.key!r} needs actions=<the candidates> (Lamorel does not pass "
                "candidates to module functions) and a call in one minibatch (minibatch_size >= rows)"
            )
        n_actions = [len(a) for a in actions]
        n_rows = rows.ids_RL.shape[0]
        if sum(n_actions) != n_rows:
            raise ValueError(
                f"module function {self.key!r} got a minibatch of {n_rows} rows for a call of "
                f"{sum(n_actions)}: it needs each context's candidates together, so call with "
                "minibatch_size >= the number of (context, candidate) rows (LamorelBackend.module_outputs does)"
            )
        runs: list[int] = []
        for i, ctx in enumerate(tokenized_contexts):  # Lamorel repeats one dict object per candidate
            if i > 0 and ctx is tokenized_contexts[i - 1]:
                runs[-1] += 1
            else:
                runs.append(1)
        if runs != n_actions:
            raise ValueError(f"actions= gives {n_actions} candidates per context, the minibatch {runs}")
        flat = [a for acts in actions for a in acts]
        expected = tokenize_actions(self.agent.tokenizer, flat)
        got = [tuple(r[:n]) for r, n in zip(rows.ids_RL.tolist(), rows.lengths_R.tolist(), strict=True)]
        if got != [tuple(e) for e in expected]:
            raise ValueError("actions= does not tokenize to the minibatch's candidates")
        return n_actions

    def _row_forward(self, rows: LamorelRows) -> ActionForward:
        """The rows as an :class:`ActionForward` of R states with one action each (for the heads)."""
        ones = torch.ones(rows.ids_RL.shape[0], 1, dtype=torch.bool, device=rows.logits_RPV.device)
        zeros = torch.zeros(ones.shape, device=ones.device)
        return ActionForward(
            logp_BA=zeros,
            log_pi_BA=zeros,
            mask_BA=ones,
            n_tokens_BA=rows.lengths_R[:, None],
            action_hidden_BAH=rows.action_hidden()[:, None] if self.key == Q_FN else None,
            prompt_hidden_BH=rows.prompt_hidden(),
        )


class LogPiFunction(AgentModuleFunction):
    """``"log_pi"``: per row, log pi(candidate | context) under the agent's ``model.normalization``.

    Needs ``actions=`` (the candidates) and each call in one Lamorel minibatch (the normalisation is
    over each context's candidates): ``custom_module_fns(["log_pi"], contexts, candidates=c,
    actions=c, minibatch_size=n_rows)``.
    """

    key = LOG_PI_FN

    def forward(
        self,
        forward_outputs: Any,
        minibatch: dict[str, Any],
        tokenized_contexts: list[Any],
        actions: list[list[str]] | None = None,
        **kwargs: Any,
    ) -> Tensor:
        rows = self.rows(forward_outputs, minibatch, tokenized_contexts)
        n_actions = self.row_actions(actions, tokenized_contexts, rows)
        agent = self.agent
        return rows_log_pi(rows, n_actions, agent.normalization, agent.tokenizer).cpu()


class QFunction(AgentModuleFunction):
    """``"q"``: per row, ``(n_critics,)`` online Q-values of the agent's heads (``LLMAgent._q_values``).

    ``critic.input=prompt_action`` reads the state at the last candidate token and works with any
    minibatch size; ``critic.input=prompt`` maps each row's action text to its head output, so it needs
    ``actions=`` and the call in one minibatch, like ``"log_pi"``.
    """

    key = Q_FN

    def forward(
        self,
        forward_outputs: Any,
        minibatch: dict[str, Any],
        tokenized_contexts: list[Any],
        actions: list[list[str]] | None = None,
        **kwargs: Any,
    ) -> Tensor:
        rows = self.rows(forward_outputs, minibatch, tokenized_contexts)
        agent = self.agent
        if isinstance(agent.q, PromptInputQ):
            self.row_actions(actions, tokenized_contexts, rows)
            assert actions is not None
            per_row = [[a] for acts in actions for a in acts]
        else:
            per_row = [[""] for _ in range(rows.ids_RL.shape[0])]  # unused by ActionInputQ
        q_KR1: Tensor = agent._q_values(
            agent.q, self._row_forward(rows), per_row, detach=not agent.critic_cfg.backprop_llm
        )
        return q_KR1[..., 0].T.cpu()


class ValueFunction(AgentModuleFunction):
    """``"value"``: per row, V(context) from the agent's value head (``LLMAgent._value``); every row of a
    context holds the same value."""

    key = VALUE_FN

    def forward(
        self, forward_outputs: Any, minibatch: dict[str, Any], tokenized_contexts: list[Any], **kwargs: Any
    ) -> Tensor:
        rows = self.rows(forward_outputs, minibatch, tokenized_contexts)
        v_R: Tensor = self.agent._value(self._row_forward(rows))
        return v_R.cpu()


def make_module_functions() -> dict[str, AgentModuleFunction]:
    """The ``custom_module_functions`` every server registers with its ``Caller``."""
    return {LOG_PI_FN: LogPiFunction(), Q_FN: QFunction(), VALUE_FN: ValueFunction()}


# ---------------------------------------------------------------------------------------------------
# RL side
# ---------------------------------------------------------------------------------------------------


def split_rows(n: int, k: int) -> list[slice]:
    """``k`` contiguous shards of ``n`` rows, sizes differing by at most one (numpy's ``array_split``).

    Worked example: ``split_rows(10, 3)`` -> ``[0:4, 4:7, 7:10]``.
    """
    base, extra = divmod(n, k)
    out, start = [], 0
    for i in range(k):
        stop = start + base + (1 if i < extra else 0)
        out.append(slice(start, stop))
        start = stop
    return out


def concat_act(parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]) -> ActOutput:
    """Concatenate per-shard ``(log_pi_BA, mask_BA, v_B)`` padding the action axis to the widest shard."""
    width = max(p[0].shape[1] for p in parts)

    def pad(t: torch.Tensor, fill: float | bool) -> torch.Tensor:
        return torch.nn.functional.pad(t, (0, width - t.shape[1]), value=fill)

    log_pi = torch.cat([pad(p[0], 0.0) for p in parts])
    mask = torch.cat([pad(p[1], False) for p in parts])
    values = [p[2] for p in parts]
    v = torch.cat([x for x in values if x is not None]) if all(x is not None for x in values) else None
    return ActOutput(log_pi, mask, v)


_MODULE_FNS = "module_fns"


def _invoke(caller: Any, payload: dict[str, Any]) -> list[Any]:
    """One ``caller.update`` call (the results of the server(s) that handled it), or, for
    ``method="module_fns"``, one ``caller.custom_module_fns`` call (one dict of outputs per context)."""
    payload = dict(payload)
    contexts, candidates = payload.pop("contexts"), payload.pop("candidates")
    if payload.get("method") == _MODULE_FNS:
        del payload["method"]
        keys = payload.pop("keys")
        return list(caller.custom_module_fns(keys, contexts, candidates=candidates, **payload))
    result = caller.update(contexts, candidates, **payload)
    return list(result)


def whole_prompt_groups(n_actions: Sequence[int], max_rows: int) -> list[slice]:
    """Contiguous groups of whole prompts of at most ``max_rows`` (prompt, action) rows each (a prompt
    with more actions than that is a group alone): one Lamorel minibatch per group keeps every prompt's
    candidates together. Worked examples: ``whole_prompt_groups([5, 2, 4], 6)`` -> ``[0:1, 1:3]``;
    ``whole_prompt_groups([7, 1], 6)`` -> ``[0:1, 1:2]`` (7 rows in one group: a prompt is never split)."""
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")
    groups: list[slice] = []
    start, rows = 0, 0
    for i, n in enumerate(n_actions):
        if i > start and rows + n > max_rows:
            groups.append(slice(start, i))
            start, rows = i, 0
        rows += n
    if len(n_actions) > start:
        groups.append(slice(start, len(n_actions)))
    return groups


_CLOSE = "close"


def serve_follower(caller: Any, rl_group: Any) -> None:
    """RL ranks > 0: issue the shard of every call rank 0 hands out, until rank 0 closes."""
    while True:
        box: list[Any] = [None]
        dist.broadcast_object_list(box, src=0, group=rl_group)
        method, payloads = box[0]
        if method == _CLOSE:
            caller.close()
            return
        results = _invoke(caller, payloads[dist.get_rank(group=rl_group)])
        dist.gather_object(results, None, dst=0, group=rl_group)


class LamorelBackend:
    """The :class:`~sac_glam.backends.base.Backend` of RL rank 0: every call goes to the servers.

    ``n_rl > 1`` RL processes: rank 0 shards each call over them (the others run
    :func:`serve_follower`), one shard per server (module docstring, "Process layout").
    """

    def __init__(self, caller: Any, cfg: Config, rl_group: Any = None, n_rl: int = 1):
        global _ACTIVE
        self.caller = caller
        self.cfg = cfg
        self.rl_group = rl_group
        self.n_rl = n_rl
        self._closed = False
        self._fn_info: dict[tuple[str, ...], dict[str, Any]] = {}
        _ACTIVE = self

    @staticmethod
    def active() -> LamorelBackend | None:
        """The backend of this RL process, once the RL script has built it."""
        return _ACTIVE

    def _call(self, method: str, payloads: list[dict[str, Any]]) -> list[list[Any]]:
        """Send ``payloads[i]`` through RL rank ``i``; per RL rank, the results of its server(s)."""
        if self._closed:
            raise RuntimeError("the Lamorel backend is closed")
        payloads = [{**p, "method": method} for p in payloads]
        if self.n_rl == 1:
            return [_invoke(self.caller, payloads[0])]
        dist.broadcast_object_list([(method, payloads)], src=0, group=self.rl_group)
        mine = _invoke(self.caller, payloads[0])
        gathered: list[Any] = [None] * self.n_rl
        dist.gather_object(mine, gathered, dst=0, group=self.rl_group)
        return gathered

    def _control(self, method: str, first: dict[str, Any], others: dict[str, Any]) -> list[list[Any]]:
        """A call without rows: RL rank 0 sends ``first``, the others ``others``."""
        empty = {"contexts": [""], "candidates": [[""]]}
        return self._call(method, [{**empty, **(first if i == 0 else others)} for i in range(self.n_rl)])

    def act(self, prompts: list[str], actions: list[list[str]], *, value: bool = False) -> ActOutput:
        shards = split_rows(len(prompts), self.n_rl)
        payloads = [{"contexts": prompts[s], "candidates": actions[s], "value": value} for s in shards]
        parts = [r for results in self._call("act", payloads) for r in results if r is not None]
        return concat_act(parts)

    def module_outputs(
        self, prompts: list[str], actions: list[list[str]], keys: Sequence[str] = MODULE_FUNCTION_KEYS
    ) -> list[dict[str, Tensor]]:
        """The Lamorel-native path: the registered module functions through ``caller.custom_module_fns``
        (what Lamorel users call as ``lm_server.custom_module_fns([...], contexts, candidates=...)``).

        Per prompt b, a dict with the requested ``keys``: ``"log_pi"`` (A_b,) log pi of its actions
        under ``model.normalization``, ``"q"`` (n_critics, A_b) online Q-values, ``"value"`` () V(s),
        i.e. ``log_pi_BA[b, :A_b]``, ``q_KBA[:, b, :A_b]`` and ``v_B[b]`` of ``LLMAgent.evaluate``.

        Caveat: these values come from Lamorel's forward, not ours, so they are exact only where
        Lamorel's tokenisation matches our scorer's: a seq2seq model whose pad id and decoder start id
        are 0 (T5 / Flan-T5). Lamorel tokenizes contexts without special tokens, so each prompt gets the
        tokenizer's special text added here (T5: ``"</s>"`` appended; nothing for our word tokenizer).
        Anything else is refused with the reason before any forward (a causal model; the tiny preset,
        whose word tokenizer puts a real word at id 0 on purpose and starts the decoder at its pad id;
        ``critic.share_llm=false`` for ``"q"``; no value head for ``"value"``): use :meth:`act`, exact
        for every model. Prompts are sent in groups of whole prompts of at most ``model.minibatch_size``
        rows, one call and one Lamorel minibatch per group (log pi normalises over a prompt's actions),
        groups spread over the RL ranks' servers.
        """
        keys = tuple(keys)
        if len(prompts) != len(actions) or any(not a for a in actions):
            raise ValueError("need one non-empty action list per prompt")
        if keys not in self._fn_info:
            ask = {"keys": list(keys)}
            self._fn_info[keys] = self._control("module_fn_info", ask, ask)[0][0]
        info = self._fn_info[keys]
        if info["problems"]:
            raise ValueError("Lamorel module functions unavailable: " + "; ".join(info["problems"]))
        contexts = [info["prefix"] + p + info["suffix"] for p in prompts]

        def payload(ctx: list[str], acts: list[list[str]]) -> dict[str, Any]:
            return {"contexts": ctx, "candidates": acts, "actions": acts, "keys": list(keys),
                    "minibatch_size": sum(len(a) for a in acts)}  # fmt: skip

        # Every RL rank calls in lockstep: ranks without a group in a round score a one-row dummy.
        dummy = payload(contexts[:1], [actions[0][:1]])
        groups = whole_prompt_groups([len(a) for a in actions], self.cfg.model.minibatch_size)
        results: list[dict[str, Tensor]] = []
        for first in range(0, len(groups), self.n_rl):
            round_groups = groups[first : first + self.n_rl]
            payloads = [payload(contexts[g], actions[g]) for g in round_groups]
            payloads += [dummy] * (self.n_rl - len(round_groups))
            per_rank = self._call(_MODULE_FNS, payloads)
            for rank_results in per_rank[: len(round_groups)]:
                results.extend(rank_results)
        out = []
        for r in results:
            item = {}
            if LOG_PI_FN in r:
                item[LOG_PI_FN] = r[LOG_PI_FN]
            if Q_FN in r:
                item[Q_FN] = r[Q_FN].T  # (A_b, K) rows -> (K, A_b), as q_KBA
            if VALUE_FN in r:
                item[VALUE_FN] = r[VALUE_FN][0]  # every row of a prompt holds V(s)
            out.append(item)
        return out

    def update(self, batch: Any) -> dict[str, float]:
        size = len(batch.prompts)
        if size < self.n_rl:
            raise ValueError(f"a batch of {size} rows cannot be split over {self.n_rl} LLM servers")
        if isinstance(batch, PPOBatch) and self.cfg.ppo.normalize_advantages:
            # Normalised over the whole minibatch here, not per server shard (PPOUpdater's local rule).
            batch = batch._replace(advantages=ppo.normalize(batch.advantages))
        payloads = []
        for s in split_rows(size, self.n_rl):
            shard = slice_batch(batch, s)
            payloads.append({"contexts": shard.prompts, "candidates": shard.actions, "batch": shard})
        results = [r for rs in self._call("update", payloads) for r in rs]
        total = sum(r["n"] for r in results)
        keys = results[0]["stats"].keys()
        # Every stat is a mean over rows (or equal on all servers): the row-weighted mean is the batch's.
        return {k: sum(r["n"] * r["stats"][k] for r in results) / total for k in keys}

    def server_states(self) -> list[dict[str, Any]]:
        """The trainable state of every server (to check that they agree)."""
        return [r for rs in self._control("state_dict", {"want": True}, {"want": True}) for r in rs]

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = self._control("state_dict", {"want": True}, {"want": False})[0][0]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._control("load_state_dict", {"state": state}, {"state": state})

    def save_pretrained(self, path: str | Path) -> None:
        self._control("save", {"path": str(Path(path).resolve())}, {"path": None})

    def close(self) -> None:
        global _ACTIVE
        if self._closed:
            return
        if self.n_rl > 1:
            dist.broadcast_object_list([(_CLOSE, None)], src=0, group=self.rl_group)
        self.caller.close()
        self._closed = True
        if _ACTIVE is self:
            _ACTIVE = None


# ---------------------------------------------------------------------------------------------------
# Process start-up (what experiments/lamorel_rl_script.py runs in every process)
# ---------------------------------------------------------------------------------------------------


def lamorel_args_for(cfg: Config, model_dir: str | None) -> Any:
    """``cfg.lamorel_args`` as the ``DictConfig`` Lamorel reads, with the model keys made to agree
    with ``cfg.model``: ``model_type`` from its family, ``model_path`` from its name (or ``model_dir``,
    the saved tiny preset), and Lamorel's own 4-bit loading off (our ``models.py`` quantises)."""
    missing = missing_lamorel_keys(cfg.lamorel_args)
    if missing:
        raise ConfigError(f"lamorel_args lacks keys Lamorel reads without defaults: {', '.join(missing)}")
    from sac_glam.llm.models import TINY_PRESETS

    args = OmegaConf.create(cfg.lamorel_args)
    llm = args.llm_args
    if cfg.model.name in TINY_PRESETS:
        llm.model_type = TINY_PRESETS[cfg.model.name]
        if model_dir is not None:
            llm.model_path, llm.pretrained = model_dir, True
    else:
        llm.model_path = cfg.model.name
        if cfg.model.family != "auto":
            llm.model_type = cfg.model.family
    llm.load_in_4bit = False
    return args


def save_tiny_preset(cfg: Config) -> str:
    """Write the tiny preset (weights and tokenizer) where Lamorel's loader can read it; our agent
    replaces the loaded copy (:class:`AgentInitializer`), so this only satisfies Lamorel's loader."""
    from sac_glam.llm.models import load_model

    directory = tempfile.mkdtemp(prefix="sac_glam_lamorel_")
    loaded = load_model(dataclasses.replace(cfg.model, lora=False, load_in_4bit=False))
    loaded.model.save_pretrained(directory)
    loaded.tokenizer.save_pretrained(directory)
    return directory


def set_threads(cfg: Config, n_processes: int) -> int:
    """CPU threads of this process: ``train.threads`` or the cores shared evenly by all processes."""
    threads = cfg.train.threads or max(1, (os.cpu_count() or 1) // n_processes)
    torch.set_num_threads(threads)
    return threads


def run_process(cfg: Config, rl_main: Callable[[LamorelBackend], Any]) -> Any:
    """Start this process's part: an LLM server (returns only when closed), RL rank 0
    (``rl_main(backend)``, then close) or a relaying RL rank."""
    from sac_glam.llm.models import TINY_PRESETS

    n_rl, n_llm = process_layout(cfg)
    rank = int(os.environ.get("RANK", "0"))
    set_threads(cfg, n_rl + n_llm)
    use_gpu = bool(cfg.lamorel_args.get("llm_args", {}).get("parallelism", {}).get("use_gpu", False))
    if not use_gpu:
        # accelerate >= 1.x gives every process rank 0 on CPU unless its state is built for CPU before
        # Lamorel's Accelerator (docs/lamorel_facts.md: "Argument gather_list must be specified ...").
        from accelerate import PartialState

        PartialState(cpu=True)
    lamorel_init()
    is_llm = rank >= n_rl
    model_dir = save_tiny_preset(cfg) if is_llm and cfg.model.name in TINY_PRESETS else None
    try:
        caller = Caller(
            lamorel_args_for(cfg, model_dir),
            custom_updater=AgentUpdater(cfg) if is_llm else None,
            custom_module_functions=make_module_functions() if is_llm else {},
            custom_model_initializer=AgentInitializer(cfg) if is_llm else None,
        )
    finally:
        if model_dir is not None:
            shutil.rmtree(model_dir, ignore_errors=True)
    # Only RL processes get here: a server serves inside Caller() and exits on close.
    if rank > 0:
        serve_follower(caller, caller.get_rl_dist_group())
        return None
    backend = LamorelBackend(caller, cfg, caller.get_rl_dist_group(), n_rl)
    try:
        return rl_main(backend)
    finally:
        backend.close()
