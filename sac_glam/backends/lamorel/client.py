"""What runs in the RL processes: :class:`LamorelBackend`, RL rank 0's backend, which sends every call
to the LLM servers, and :func:`serve_follower`, the relay the other RL ranks run (the package
docstring, "Process layout"). Nothing numeric happens here but sharding, concatenation and the
row-weighted mean of the servers' statistics."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from sac_glam.algos import ppo
from sac_glam.algos.updaters import slice_batch
from sac_glam.backends.base import ActOutput
from sac_glam.backends.lamorel.module_functions import LOG_PI_FN, MODULE_FUNCTION_KEYS, Q_FN, VALUE_FN
from sac_glam.buffers.rollout import PPOBatch
from sac_glam.config import Config

_ACTIVE: LamorelBackend | None = None


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
    :func:`serve_follower`), one shard per server (package docstring, "Process layout").
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
