"""What every process of a Lamorel run starts with (``experiments/lamorel_rl_script.py`` calls
:func:`run_process`): the process layout, the ``lamorel_args`` handed to Lamorel's ``Caller``, and
the choice of this process's part: an LLM server, RL rank 0 or a relaying RL rank."""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

import torch
from lamorel import Caller, lamorel_init
from omegaconf import OmegaConf

from sac_glam.backends.lamorel.client import LamorelBackend, serve_follower
from sac_glam.backends.lamorel.module_functions import make_module_functions
from sac_glam.backends.lamorel.server import AgentInitializer, AgentUpdater
from sac_glam.config import Config, ConfigError
from sac_glam.llm.models import TINY_PRESETS, load_model
from sac_glam.pretrain import pretrain_tiny

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


def lamorel_args_for(cfg: Config, model_dir: str | None) -> Any:
    """``cfg.lamorel_args`` as the ``DictConfig`` Lamorel reads, with the model keys made to agree
    with ``cfg.model``: ``model_type`` from its family, ``model_path`` from its name (or ``model_dir``,
    the saved tiny preset), and Lamorel's own 4-bit loading off (our ``models.py`` quantises)."""
    missing = missing_lamorel_keys(cfg.lamorel_args)
    if missing:
        raise ConfigError(f"lamorel_args lacks keys Lamorel reads without defaults: {', '.join(missing)}")
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
    directory = tempfile.mkdtemp(prefix="sac_glam_lamorel_")
    loaded = load_model(
        dataclasses.replace(cfg.model, lora=False, load_in_4bit=False), pretrain=pretrain_tiny
    )
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
