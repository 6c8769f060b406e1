"""The ``lamorel`` backend: the same agent and updaters inside Lamorel's LLM server processes.

Lamorel (github.com/flowersteam/lamorel) is imported only in this package. The launcher starts
``n_rl + n_llm`` copies of ``experiments/lamorel_rl_script.py``; ranks ``0..n_rl-1`` are RL processes,
the others LLM servers that serve until the RL side closes them (``docs/lamorel_facts.md``).

Files, by the side of Lamorel they run on
-----------------------------------------
- ``process.py``, every process: the process layout, the ``lamorel_args`` Lamorel reads, and
  :func:`run_process`, which makes this process an LLM server, RL rank 0 or a relaying RL rank.
- ``server.py``, each LLM server: :class:`AgentInitializer`, :class:`AgentUpdater` (the requests the RL
  side sends) and :class:`GradientAllReduce`.
- ``module_functions.py``, each LLM server: the ``BaseModuleFunction``s ``log_pi``, ``q``, ``value``.
- ``client.py``, the RL processes: :class:`LamorelBackend` (RL rank 0) and :func:`serve_follower` (the
  other RL ranks), with the sharding of calls over them.

The agent and updater come from :mod:`sac_glam.backends.build`, as for the local backend; the launch
command itself (``python -m lamorel_launcher.launch ...``) is built by :mod:`sac_glam.cli.launch`.

Design: every server runs OUR forward
-------------------------------------
- :class:`AgentInitializer` (a ``BaseModelInitializer``) builds, in each server, the very
  :class:`~sac_glam.llm.agent.LLMAgent` the local backend builds (``backends.build.make_agent``: same seed,
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

from sac_glam.backends.lamorel.client import (
    LamorelBackend,
    concat_act,
    serve_follower,
    split_rows,
    whole_prompt_groups,
)
from sac_glam.backends.lamorel.module_functions import (
    LOG_PI_FN,
    MODULE_FUNCTION_KEYS,
    Q_FN,
    VALUE_FN,
    AgentModuleFunction,
    LamorelRows,
    LogPiFunction,
    QFunction,
    ValueFunction,
    affix_texts,
    make_module_functions,
    module_function_problems,
    rows_log_pi,
    seq2seq_rows,
    special_affixes,
)
from sac_glam.backends.lamorel.process import (
    REQUIRED_LAMOREL_KEYS,
    lamorel_args_for,
    missing_lamorel_keys,
    process_layout,
    run_process,
)
from sac_glam.backends.lamorel.server import AGENT_ATTR, AgentInitializer, AgentUpdater, GradientAllReduce

__all__ = [
    "AGENT_ATTR",
    "LOG_PI_FN",
    "MODULE_FUNCTION_KEYS",
    "Q_FN",
    "REQUIRED_LAMOREL_KEYS",
    "VALUE_FN",
    "AgentInitializer",
    "AgentModuleFunction",
    "AgentUpdater",
    "GradientAllReduce",
    "LamorelBackend",
    "LamorelRows",
    "LogPiFunction",
    "QFunction",
    "ValueFunction",
    "affix_texts",
    "concat_act",
    "lamorel_args_for",
    "make_module_functions",
    "missing_lamorel_keys",
    "module_function_problems",
    "process_layout",
    "rows_log_pi",
    "run_process",
    "seq2seq_rows",
    "serve_follower",
    "special_affixes",
    "split_rows",
    "whole_prompt_groups",
]
