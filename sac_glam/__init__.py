"""sac-glam: SAC-GLAM and PPO-GLAM for LLM agents in Playground-Text.

Data flow (one iteration): ``envs`` (Playground-Text, vectorised) -> ``prompts`` ->
``llm`` scoring (policy log-probs, Q-values) -> ``buffers`` (replay + HER, or PPO rollout) ->
``algos`` (pure losses) / ``backends`` (model, optimisers, updates) -> ``logging`` metrics.

Shape letters used in names and comments across the package:

- ``B`` batch (states or transitions), ``A`` actions per state (padded to the largest set, with a mask),
- ``T`` tokens, ``H`` hidden size, ``V`` token vocabulary, ``K`` critics (clipped double Q),
- ``E`` environments, ``R`` (prompt, action) rows of a scoring call.
"""

__version__ = "0.1.0"
