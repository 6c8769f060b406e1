"""What runs in each LLM server for the Lamorel-native path: the ``BaseModuleFunction``s ``log_pi``,
``q`` and ``value``, which read Lamorel's own forward and apply the agent's heads (the package
docstring, "Module functions": exact for T5-like models only, checked before any output)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from lamorel import BaseModuleFunction
from torch import Tensor

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

    def forward(
        self,
        forward_outputs: Any,
        minibatch: dict[str, Any],
        tokenized_contexts: list[Any],
        actions: list[list[str]] | None = None,
        **kwargs: Any,
    ) -> Tensor:
        """What Lamorel calls: the minibatch as checked :class:`LamorelRows` (:meth:`rows`), then this
        function's :meth:`outputs` on them, moved to the CPU. ``actions`` is the call's ``actions=``
        keyword (None when not given)."""
        rows = self.rows(forward_outputs, minibatch, tokenized_contexts)
        return self.outputs(rows, tokenized_contexts, actions).cpu()

    def outputs(
        self, rows: LamorelRows, tokenized_contexts: list[Any], actions: list[list[str]] | None
    ) -> Tensor:
        """One output per row; each module function defines it."""
        raise NotImplementedError

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

    def outputs(
        self, rows: LamorelRows, tokenized_contexts: list[Any], actions: list[list[str]] | None
    ) -> Tensor:
        n_actions = self.row_actions(actions, tokenized_contexts, rows)
        agent = self.agent
        return rows_log_pi(rows, n_actions, agent.normalization, agent.tokenizer)


class QFunction(AgentModuleFunction):
    """``"q"``: per row, ``(n_critics,)`` online Q-values of the agent's heads (``LLMAgent._q_values``).

    ``critic.input=prompt_action`` reads the state at the last candidate token and works with any
    minibatch size; ``critic.input=prompt`` maps each row's action text to its head output, so it needs
    ``actions=`` and the call in one minibatch, like ``"log_pi"``.
    """

    key = Q_FN

    def outputs(
        self, rows: LamorelRows, tokenized_contexts: list[Any], actions: list[list[str]] | None
    ) -> Tensor:
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
        return q_KR1[..., 0].T


class ValueFunction(AgentModuleFunction):
    """``"value"``: per row, V(context) from the agent's value head (``LLMAgent._value``); every row of a
    context holds the same value."""

    key = VALUE_FN

    def outputs(
        self, rows: LamorelRows, tokenized_contexts: list[Any], actions: list[list[str]] | None
    ) -> Tensor:
        v_R: Tensor = self.agent._value(self._row_forward(rows))
        return v_R


def make_module_functions() -> dict[str, AgentModuleFunction]:
    """The ``custom_module_functions`` every server registers with its ``Caller``."""
    return {LOG_PI_FN: LogPiFunction(), Q_FN: QFunction(), VALUE_FN: ValueFunction()}
