"""Token ids of prompts and actions, cached per tokenizer (the scorer's tokenisation, ``llm/scoring.py``).

Actions repeat constantly (a few dozen strings per environment). Prompts repeat too: a replay buffer
hands each stored transition to ~``replay ratio`` updates, and the policy and a separate critic LLM
tokenise the same prompts; the tokenizer call was ~6% of an update of the CPU default. Each cache is a
dict per tokenizer object, cleared when full (a bounded size, no per-hit bookkeeping). The cached
lists are shared: callers must not modify them. One lock serialises the calls: with
``train.parallel_llms`` the policy and critic LLMs' lanes (``llm/lanes.py``) tokenise at the same time,
through one tokenizer, and a Hugging Face fast tokenizer called from two threads at once can fail
("Already borrowed"); the second caller then finds the first one's ids cached.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

_ACTION_TOKEN_CACHE: weakref.WeakKeyDictionary[Any, dict[str, tuple[int, ...]]] = weakref.WeakKeyDictionary()
_PROMPT_TOKEN_CACHE: weakref.WeakKeyDictionary[Any, dict[str, list[int]]] = weakref.WeakKeyDictionary()
_MAX_CACHED_ACTIONS = 200_000
MAX_CACHED_PROMPTS = 50_000
"""About 30 MB of ids and strings at the CPU presets' ~35-token prompts."""
_LOCK = threading.Lock()


def _missing(cache: dict[str, Any], texts: list[str], limit: int) -> list[str]:
    """The distinct texts to tokenise; when they would overflow the cache, it is cleared first and then
    every text of the call is missing (the ones cached before the clear included)."""
    distinct = list(dict.fromkeys(texts))
    missing = [t for t in distinct if t not in cache]
    if missing and len(cache) + len(missing) > limit:
        cache.clear()
        return distinct
    return missing


def tokenize_actions(tokenizer: Any, actions: list[str]) -> list[tuple[int, ...]]:
    """Token ids of each action, without special tokens; cached per tokenizer."""
    with _LOCK:
        return _tokenize_actions(tokenizer, actions)


def _tokenize_actions(tokenizer: Any, actions: list[str]) -> list[tuple[int, ...]]:
    cache = _ACTION_TOKEN_CACHE.setdefault(tokenizer, {})
    missing = _missing(cache, actions, _MAX_CACHED_ACTIONS)
    if missing:
        encoded = tokenizer(missing, add_special_tokens=False)["input_ids"]
        for text, ids in zip(missing, encoded, strict=True):
            if not ids:
                raise ValueError(f"action {text!r} has no tokens; every action needs at least one")
            cache[text] = tuple(ids)
    return [cache[a] for a in actions]


def tokenize_prompts(tokenizer: Any, prompts: list[str]) -> list[list[int]]:
    """Token ids of each prompt, with the model's special tokens; cached per tokenizer."""
    with _LOCK:
        return _tokenize_prompts(tokenizer, prompts)


def _tokenize_prompts(tokenizer: Any, prompts: list[str]) -> list[list[int]]:
    cache = _PROMPT_TOKEN_CACHE.setdefault(tokenizer, {})
    missing = _missing(cache, prompts, MAX_CACHED_PROMPTS)
    if missing:
        encoded: list[list[int]] = tokenizer(missing, add_special_tokens=True)["input_ids"]
        for text, ids in zip(missing, encoded, strict=True):
            if not ids:
                raise ValueError(f"prompt {text!r} has no tokens")
            cache[text] = ids
    return [cache[p] for p in prompts]
