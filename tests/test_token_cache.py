"""The scorer's token caches (``llm/token_cache.py``): the ids the tokenizer gives, computed once."""

from __future__ import annotations

from unittest import mock

import pytest
from llm_fixtures import ACTIONS, PROMPTS, tiny_model

from sac_glam.llm import token_cache
from sac_glam.llm.token_cache import tokenize_actions, tokenize_prompts


def test_prompt_cache_equals_tokenizer_and_skips_it_on_repeats() -> None:
    tok = tiny_model("tiny-causal").tokenizer
    prompts = [PROMPTS[1], PROMPTS[0], PROMPTS[1], PROMPTS[2]]
    expected = tok(prompts, add_special_tokens=True)["input_ids"]
    assert tokenize_prompts(tok, prompts) == expected
    with mock.patch.object(type(tok), "__call__", side_effect=AssertionError("tokenizer called")):
        assert tokenize_prompts(tok, prompts[::-1]) == expected[::-1]


def test_prompt_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    tok = tiny_model("tiny-causal").tokenizer
    monkeypatch.setattr(token_cache, "MAX_CACHED_PROMPTS", 2)
    tokenize_prompts(tok, PROMPTS[:2])
    ids = tokenize_prompts(tok, PROMPTS[2:])  # full: cleared, then holds the new one
    assert ids == tok(PROMPTS[2:], add_special_tokens=True)["input_ids"]
    assert len(token_cache._PROMPT_TOKEN_CACHE[tok]) == 1
    # A call that overflows the cache with prompts it already holds, and new ones, gets every prompt
    # (the clear must not drop the ones this call finds cached: a KeyError after 50K prompts in a soak).
    mixed = [PROMPTS[2], PROMPTS[0], PROMPTS[1], PROMPTS[2]]
    assert tokenize_prompts(tok, mixed) == tok(mixed, add_special_tokens=True)["input_ids"]


def test_action_cache_overflow_keeps_every_action_of_the_call(monkeypatch: pytest.MonkeyPatch) -> None:
    tok = tiny_model("tiny-causal").tokenizer
    flat = list(dict.fromkeys(a for acts in ACTIONS for a in acts))
    monkeypatch.setattr(token_cache, "_MAX_CACHED_ACTIONS", len(flat) - 1)
    token_cache._ACTION_TOKEN_CACHE.pop(tok, None)
    tokenize_actions(tok, flat[:2])
    assert tokenize_actions(tok, flat[:-1]) == [
        tuple(x) for x in tok(flat[:-1], add_special_tokens=False)["input_ids"]
    ]
    assert tokenize_actions(tok, flat) == [tuple(x) for x in tok(flat, add_special_tokens=False)["input_ids"]]


def test_action_cache_equals_tokenizer() -> None:
    tok = tiny_model("tiny-causal").tokenizer
    flat = [a for acts in ACTIONS for a in acts]
    assert tokenize_actions(tok, flat) == [tuple(x) for x in tok(flat, add_special_tokens=False)["input_ids"]]
