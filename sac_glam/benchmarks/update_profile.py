"""``sac-glam bench scaling --profile``: where one SAC update's time goes.

Two views of the real :meth:`~sac_glam.algos.updaters.SACUpdater.update`, at the config's batch size and N
(``sac_glam/benchmarks/scaling.py`` builds the updater and the filled replay buffer):

- :func:`profile_operators`: the top operators by self CPU time under ``torch.profiler``;
- :func:`coarse_split`: a split measured from outside, since the updater has no ``record_function``
  labels and runs critic and actor through one ``backward``: module forward hooks on the LLMs and Q
  heads split each forward into actor, critic and scoring glue; gradient hooks on Q / log pi and
  post-accumulate hooks on the parameters split the backward (exact for the default separate critic
  LLM; with a shared LLM the LLM's backward counts as the actor's); optimiser step hooks and wrappers of
  ``alpha.update`` / ``agent.update_target`` time the rest. Updates without hooks, interleaved with the
  timed ones, show what the hooks cost.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any
from unittest import mock

import numpy as np
import torch

from sac_glam.algos.updaters import SACUpdater
from sac_glam.buffers.replay import ReplayBuffer


def profile_operators(
    updater: SACUpdater, buffer: ReplayBuffer, batch_size: int, updates: int, rng: np.random.Generator,
    top: int = 12,
) -> None:  # fmt: skip
    from torch.autograd.profiler import record_function
    from torch.profiler import ProfilerActivity, profile

    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(updates):
            with record_function("buffer.sample"):
                batch = buffer.sample(batch_size, rng)
            updater.update(batch)
    wall_ms = 1e3 * (time.perf_counter() - t0) / updates
    events = list(prof.key_averages())
    total = sum(e.self_cpu_time_total for e in events)
    print(f"torch.profiler, {updates} updates at batch {batch_size}: top {top} operators by self CPU time "
          f"(per update; profiled wall {wall_ms:.0f} ms/update incl. profiler overhead)")  # fmt: skip
    name_w = 58
    print(f"{'operator':<{name_w}} {'calls':>6} {'self ms':>8} {'self %':>7} {'total ms':>9}")
    for e in sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]:
        name = e.key if len(e.key) <= name_w else e.key[: name_w - 3] + "..."
        print(f"{name:<{name_w}} {e.count / updates:>6.0f} {e.self_cpu_time_total / 1e3 / updates:>8.2f} "
              f"{e.self_cpu_time_total / total:>7.1%} {e.cpu_time_total / 1e3 / updates:>9.2f}")  # fmt: skip
    print()


class _Clock:
    """Milliseconds per label for one update; nested or re-entrant ``enter`` of a label counts once."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = defaultdict(float)
        self.phase = "other"
        """Which ``agent.evaluate`` call is running: ``target`` (next state), ``current`` or ``other``."""
        self.spans: dict[str, list[list[float]]] = defaultdict(list)
        """Backward spans per group: [first gradient reaching its output, last parameter gradient]."""
        self._depth: dict[str, int] = defaultdict(int)
        self._start: dict[str, float] = {}

    def reset(self) -> None:
        self.ms.clear()
        self.spans.clear()

    def enter(self, label: str) -> None:
        if self._depth[label] == 0:
            self._start[label] = time.perf_counter()
        self._depth[label] += 1

    def exit(self, label: str) -> None:
        self._depth[label] -= 1
        if self._depth[label] == 0:
            self.ms[label] += 1e3 * (time.perf_counter() - self._start[label])

    def timed(self, label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            self.enter(label)
            try:
                return fn(*args, **kwargs)
            finally:
                self.exit(label)

        return wrapper

    def backward_started(self, group: str) -> Callable[[torch.Tensor], None]:
        def hook(grad: torch.Tensor) -> None:
            now = time.perf_counter()
            self.spans[group].append([now, now])

        return hook

    def grad_accumulated(self, group: str) -> Callable[[torch.Tensor], None]:
        def hook(param: torch.Tensor) -> None:
            if self.spans[group]:
                self.spans[group][-1][1] = time.perf_counter()

        return hook

    def backward_ms(self, group: str) -> float:
        return 1e3 * sum(end - start for start, end in self.spans[group])


@contextmanager
def instrumented(updater: SACUpdater, clock: _Clock) -> Iterator[None]:
    """Hooks and wrappers that time the pieces of ``updater.update`` into ``clock``; removed on exit."""
    from sac_glam.llm import packed
    from sac_glam.llm.models import base_model

    agent = updater.agent
    groups = agent.parameter_groups()
    # Networks per role: the policy LLM; the critic LLM (if separate) and the online/target Q heads.
    nets: dict[str, list[torch.nn.Module]] = {
        "policy": [base_model(agent.llm)],
        "critic": [agent.q, agent.target_q],
    }
    if agent.critic_llm is not None:
        nets["critic"].append(base_model(agent.critic_llm))
    with ExitStack() as stack:
        for role, modules in nets.items():
            for module in modules:
                # forward_actions calls a seq2seq encoder on its own, then the model on the encoder output.
                get_encoder = getattr(module, "get_encoder", None)
                encoder = get_encoder() if callable(get_encoder) else None
                for m in [module] + ([encoder] if isinstance(encoder, torch.nn.Module) else []):
                    pre = m.register_forward_pre_hook(
                        lambda m, a, role=role: clock.enter(f"{clock.phase}:{role}")
                    )
                    post = m.register_forward_hook(
                        lambda m, a, o, role=role: clock.exit(f"{clock.phase}:{role}")
                    )
                    stack.callback(pre.remove)
                    stack.callback(post.remove)
        # GPT-2 through the packed scorer runs its own last layer (llm/packed.py), not the model's forward.
        roles = {id(m): role for role, modules in nets.items() for m in modules}
        at_queries = packed._gpt2_at_queries

        def timed_at_queries(model: Any, *args: Any) -> Any:
            label = f"{clock.phase}:{roles.get(id(model), 'other')}"
            clock.enter(label)
            try:
                return at_queries(model, *args)
            finally:
                clock.exit(label)

        stack.enter_context(mock.patch.object(packed, "_gpt2_at_queries", timed_at_queries))
        for group, role in (("critic", "critic"), ("llm", "actor")):
            for p in groups[group]:
                stack.callback(p.register_post_accumulate_grad_hook(clock.grad_accumulated(role)).remove)

        evaluate = agent.evaluate

        def timed_evaluate(prompts: list[str], actions: list[list[str]], **kwargs: Any) -> Any:
            clock.phase = "target" if kwargs.get("target_q") else "current"
            clock.enter(clock.phase)
            try:
                out = evaluate(prompts, actions, **kwargs)
            finally:
                clock.exit(clock.phase)
                clock.phase = "other"
            if out.q_KBA is not None and out.q_KBA.requires_grad:
                out.q_KBA.register_hook(clock.backward_started("critic"))
            if out.log_pi_BA.requires_grad:
                out.log_pi_BA.register_hook(clock.backward_started("actor"))
            return out

        stack.enter_context(mock.patch.object(agent, "evaluate", timed_evaluate))
        stack.enter_context(
            mock.patch.object(agent, "update_target", clock.timed("polyak", agent.update_target))
        )
        stack.enter_context(
            mock.patch.object(updater.alpha, "update", clock.timed("alpha", updater.alpha.update))
        )
        opt = updater.optimizer
        stack.callback(opt.register_step_pre_hook(lambda o, a, k: clock.enter("adam")).remove)
        stack.callback(opt.register_step_post_hook(lambda o, a, k: clock.exit("adam")).remove)
        yield


def coarse_split(
    updater: SACUpdater, buffer: ReplayBuffer, batch_size: int, updates: int, rng: np.random.Generator
) -> list[tuple[str, float]]:
    """(part, median ms per update) rows of the real ``SACUpdater.update`` (see the module docstring)."""
    from sac_glam.llm.scoring import tokenize_actions, tokenize_prompts

    agent = updater.agent
    clock = _Clock()
    parts: dict[str, list[float]] = defaultdict(list)
    n_llms = 1 if agent.critic_llm is None else 2  # each scores (and tokenises) current and next states
    for _ in range(updates):
        # An update without hooks first, interleaved, so that their cost is visible despite load drift.
        t0 = time.perf_counter()
        updater.update(buffer.sample(batch_size, rng))
        parts["plain"].append(1e3 * (time.perf_counter() - t0))
        clock.reset()
        with instrumented(updater, clock):
            t0 = time.perf_counter()
            batch = buffer.sample(batch_size, rng)
            t1 = time.perf_counter()
            updater.update(batch)
            t2 = time.perf_counter()
        ms = clock.ms
        update_ms = 1e3 * (t2 - t1)
        critic_bw, actor_bw = clock.backward_ms("critic"), clock.backward_ms("actor")
        rest = update_ms - sum(ms[k] for k in ("target", "current", "adam", "alpha", "polyak"))
        row = {
            "sample": 1e3 * (t1 - t0),
            "target": ms["target"],
            "target:policy": ms["target:policy"],
            "target:critic": ms["target:critic"],
            "target:glue": ms["target"] - ms["target:policy"] - ms["target:critic"],
            "current": ms["current"],
            "current:policy": ms["current:policy"],
            "current:critic": ms["current:critic"],
            "current:glue": ms["current"] - ms["current:policy"] - ms["current:critic"],
            "backward": rest,
            "backward:critic": critic_bw,
            "backward:actor": actor_bw,
            "backward:rest": rest - critic_bw - actor_bw,
            "adam": ms["adam"],
            "alpha_polyak": ms["alpha"] + ms["polyak"],
            "total": 1e3 * (t2 - t0),
        }
        t3 = time.perf_counter()
        tok = agent.tokenizer
        tokenize_prompts(tok, batch.prompts)
        tokenize_prompts(tok, batch.next_prompts)
        tokenize_actions(tok, [a for acts in batch.actions + batch.next_actions for a in acts])
        row["tokenise"] = n_llms * 1e3 * (time.perf_counter() - t3)
        for k, v in row.items():
            parts[k].append(v)
    med = {k: statistics.median(v) for k, v in parts.items()}
    labels = [
        ("sample", "sample batch + render prompts (buffer.sample)"),
        ("target", "target: next-state policy + target critic, no grad"),
        ("target:policy", "  policy LLM"),
        ("target:critic", "  critic LLM + target Q heads"),
        ("target:glue", "  scoring glue (tokenise, pad, normalise)"),
        ("current", "current state: actor + critic forward"),
        ("current:policy", "  actor: policy LLM"),
        ("current:critic", "  critic: critic LLM + Q heads"),
        ("current:glue", "  scoring glue (tokenise, pad, normalise)"),
        ("backward", "losses + one backward (critic + actor)"),
        ("backward:critic", "  critic backward: Q heads + critic LLM"),
        ("backward:actor", "  actor backward: policy LLM"),
        ("backward:rest", "  losses, stats, zero_grad"),
        ("adam", "Adam step (LLM + critic)"),
        ("alpha_polyak", "alpha step + Polyak target update"),
        ("total", "total (sample + update)"),
        ("plain", "same, without the timing hooks (interleaved)"),
        ("tokenise", f"tokenising the batch x{n_llms} LLMs, apart (in the glue)"),
    ]
    return [(label, med[key]) for key, label in labels]
