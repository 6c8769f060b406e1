"""sac-glam: SAC-GLAM and PPO-GLAM for LLM agents in Playground-Text.

Data flow (one iteration): ``envs`` (Playground-Text, vectorised) -> ``prompts`` ->
``llm`` scoring (policy log-probs, Q-values) -> ``buffers`` (replay + HER, or PPO rollout) ->
``algos`` (pure losses) / ``backends`` (model, optimisers, updates) -> ``run`` (the loop, its metrics)
-> ``analysis`` (reports, figures). ``config`` is the ground floor every layer reads; ``cli`` the commands.

The Python API (``sac_glam/api.py``, imported on first use so that ``import sac_glam`` stays light)::

    from sac_glam import load_agent, train

    result = train("sac_glam_her_cpu", ["train.total_steps=2048"])
    agent = load_agent(result.run_dir)

Shape letters used in names and comments across the package:

- ``B`` batch (states or transitions), ``A`` actions per state (padded to the largest set, with a mask),
- ``T`` tokens, ``H`` hidden size, ``V`` token vocabulary, ``K`` critics (clipped double Q),
- ``E`` environments, ``R`` (prompt, action) rows of a scoring call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from sac_glam.api import Agent, TrainResult, load_agent, make_config, train

__all__ = ["Agent", "TrainResult", "__version__", "load_agent", "make_config", "train"]


def __getattr__(name: str) -> Any:
    # PEP 562: the API (torch, transformers) loads when first named, not on `import sac_glam`.
    if name in __all__:
        from sac_glam import api

        return getattr(api, name)
    raise AttributeError(f"module 'sac_glam' has no attribute {name!r}")
