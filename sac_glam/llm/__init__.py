"""The LLM core: models (tiny presets, hub models, LoRA, 4-bit), action scoring, heads and the agent.

``score_actions(model, tokenizer, prompts, actions)`` is the public scoring function: per prompt, the
summed token log-probs of each admissible action (paper eq. 1).
"""

from sac_glam.llm.scoring import ActionForward, forward_actions, score_actions

__all__ = ["ActionForward", "forward_actions", "score_actions"]
