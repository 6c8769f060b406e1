"""Updaters: the objects that own optimisers and turn a batch into gradient steps.

They only batch, accumulate gradients and step optimisers; the maths lives in ``sac.py`` / ``ppo.py``
(style point 1). The same classes run in the local backend and inside Lamorel's LLM servers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import torch

from sac_glam.algos import ppo, sac
from sac_glam.algos.accumulate import chunk_slices, chunk_weight, release_freed_memory
from sac_glam.buffers.replay import SACBatch
from sac_glam.buffers.rollout import PPOBatch
from sac_glam.config import PPOConfig, SACConfig

if TYPE_CHECKING:
    from sac_glam.llm.agent import LLMAgent

BatchT = TypeVar("BatchT")


def slice_batch(batch: BatchT, rows: slice) -> BatchT:
    """The rows of a NamedTuple batch whose fields are lists or tensors with a leading batch axis."""
    fields: Any = batch
    return type(batch)(*(field[rows] for field in fields))


# ---------------------------------------------------------------------------------------------------
# Entropy coefficient strategies (Tianshou's FixedAlpha / AutoAlpha)
# ---------------------------------------------------------------------------------------------------


class Alpha(Protocol):
    @property
    def value(self) -> float: ...

    def update(self, entropy_B: torch.Tensor, n_actions_B: torch.Tensor) -> float:
        """One step toward the target entropy; returns the loss (0 for a fixed alpha)."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class FixedAlpha:
    """A constant entropy coefficient."""

    def __init__(self, alpha: float):
        self._alpha = alpha

    @property
    def value(self) -> float:
        return self._alpha

    def update(self, entropy_B: torch.Tensor, n_actions_B: torch.Tensor) -> float:
        return 0.0

    def state_dict(self) -> dict[str, Any]:
        return {"alpha": self._alpha}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._alpha = float(state["alpha"])


class AutoAlpha:
    """Learned log alpha (Appendix C: init 0.005 / 0.05, target entropy 0 / 0.01, Adam lr 2e-3).

    ``target_entropy_mode="absolute"`` uses ``target_entropy`` nats, as the paper's tables;
    ``"fraction"`` uses ``target_entropy * log|A_s|`` per state, which stays meaningful when the
    number of admissible actions changes (N = 3 vs N = 6 objects).
    """

    def __init__(
        self,
        init: float,
        target_entropy: float,
        lr: float,
        mode: str = "absolute",
        device: torch.device | str = "cpu",
    ):
        # On the model's device, like the entropies it is compared with (issue 13, bug 2).
        self.log_alpha = torch.tensor(math.log(init), device=device, requires_grad=True)
        self.target_entropy = target_entropy
        self.mode = mode
        self.optimizer = torch.optim.Adam([self.log_alpha], lr=lr)

    @property
    def value(self) -> float:
        return float(self.log_alpha.detach().exp())

    def targets(self, n_actions_B: torch.Tensor) -> torch.Tensor:
        if self.mode == "fraction":
            return self.target_entropy * n_actions_B.float().log()
        return torch.full(n_actions_B.shape, self.target_entropy, device=n_actions_B.device)

    def update(self, entropy_B: torch.Tensor, n_actions_B: torch.Tensor) -> float:
        loss = sac.alpha_loss(self.log_alpha, entropy_B, self.targets(n_actions_B))
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def state_dict(self) -> dict[str, Any]:
        return {"log_alpha": self.log_alpha.detach().clone(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.optimizer.load_state_dict(state["optimizer"])


def make_alpha(cfg: SACConfig, device: torch.device | str = "cpu") -> Alpha:
    if cfg.auto_alpha:
        return AutoAlpha(cfg.alpha_init, cfg.target_entropy, cfg.alpha_lr, cfg.target_entropy_mode, device)
    return FixedAlpha(cfg.alpha_init)


# ---------------------------------------------------------------------------------------------------
# SAC
# ---------------------------------------------------------------------------------------------------


@torch.no_grad()
def bootstrap_target(
    agent: LLMAgent,
    b: SACBatch,
    alpha: float,
    reward_scale: float,
    bootstraps: list[bool] | None = None,
    backup: sac.Backup = "policy",
) -> torch.Tensor:
    """Eq. 3's target of each transition of ``b``, with the next-state forwards (policy LLM and target
    critic) on the transitions that bootstrap only.

    A transition whose n-step window ended its episode has ``discounts`` 0 (gamma^k zeroed by the
    buffer), and its V(s') is multiplied by that 0: its target is the reward sum, exactly, without
    scoring s'. Skipping those rows saves their share of the no-grad forwards (31% of the rows of a
    random-policy batch with HER, more once episodes succeed) and changes no target.

    ``bootstraps`` ((B,) ``discounts != 0``, read on the host) spares reading ``discounts`` back from
    the device: the caller reads it once per batch before moving the batch, not once per chunk.
    """
    target_B = b.returns * reward_scale
    if bootstraps is None:
        bootstraps = [d != 0.0 for d in b.discounts.tolist()]
    live = [i for i, ok in enumerate(bootstraps) if ok]
    if live:
        nxt = agent.evaluate(
            [b.next_prompts[i] for i in live], [b.next_actions[i] for i in live], target_q=True
        )
        assert nxt.target_q_KBA is not None
        rows = torch.tensor(live, device=target_B.device)
        target_B = target_B.index_copy(
            0,
            rows,
            sac.critic_target(
                target_B[rows],
                b.discounts[rows],
                nxt.log_pi_BA,
                nxt.mask_BA,
                nxt.target_q_KBA,
                alpha,
                backup,
            ),
        )
    return target_B


def _nothing() -> None:
    """The actor's lane during warm-up: no actor loss to backpropagate."""


@dataclass
class UpdateStats:
    """What one call of ``update`` reports (means over its gradient steps)."""

    values: dict[str, float]


class SACUpdater:
    """Discrete SAC gradient steps on an :class:`LLMAgent`.

    One Adam optimises the LLM (LoRA) weights at ``actor_lr`` and the Q heads at ``critic_lr``: with
    shared weights the LLM receives both the actor's and the critic's gradients (Appendix B's
    "shared parameters with backpropagation"), so the two losses are summed before one backward.
    During warm-up (Section 2.2) the actor loss is left out and the critic's gradients stop at the
    shared LLM's output (``evaluate(freeze_policy=True)``): only the critic learns, and the policy,
    which the shared LLM is, stays the pre-trained one (docs/devices.md, "Warm-up").
    """

    def __init__(self, agent: LLMAgent, cfg: SACConfig, tau: float):
        self.agent = agent
        self.cfg = cfg
        self.tau = tau
        groups = agent.parameter_groups()
        param_groups = [
            {"params": groups["llm"], "lr": cfg.actor_lr, "name": "llm"},
            {"params": groups["critic"], "lr": cfg.critic_lr, "name": "critic"},
        ]
        self.optimizer = torch.optim.Adam([g for g in param_groups if g["params"]])
        self.alpha = make_alpha(cfg, agent.device)
        self.actor_loss = sac.actor_loss_forward_kl if cfg.actor_loss == "forward_kl" else sac.actor_loss
        self.n_grad_steps = 0

    @property
    def in_warmup(self) -> bool:
        return self.n_grad_steps < self.cfg.warmup_updates

    def update(self, batch: SACBatch) -> dict[str, float]:
        """One gradient step on ``batch`` (rows accumulated in chunks of ``cfg.chunk_size``)."""
        agent, cfg = self.agent, self.cfg
        # Which rows bootstrap, read while the batch is still on the host: the chunks below then never
        # wait for the device (their losses are summed there too, and read once after the step).
        bootstraps = [d != 0.0 for d in batch.discounts.tolist()]
        batch = batch.to(agent.device)  # the one place a batch reaches the model's device
        alpha = self.alpha.value
        warmup = self.in_warmup
        size = len(batch.prompts)
        self.optimizer.zero_grad()
        entropies, n_actions, q_taken, targets = [], [], [], []
        # float64 sums of w * float32 losses: the same numbers as Python floats, without a sync per chunk.
        critic_total = torch.zeros((), dtype=torch.float64, device=agent.device)
        actor_total = torch.zeros((), dtype=torch.float64, device=agent.device)
        chunks = chunk_slices(size, cfg.chunk_size)
        for rows in chunks:
            b = slice_batch(batch, rows)
            w = chunk_weight(rows, size)
            target_B = bootstrap_target(agent, b, alpha, cfg.reward_scale, bootstraps[rows], cfg.backup)
            if cfg.target_lower_bound:
                target_B = torch.maximum(target_B, b.returns_to_go * cfg.reward_scale)
            cur = agent.evaluate(b.prompts, b.actions, q=True, freeze_policy=warmup)
            assert cur.q_KBA is not None
            loss_c = sac.critic_loss(cur.q_KBA, b.action_ids, target_B)
            loss_a = None if warmup else self.actor_loss(cur.log_pi_BA, cur.mask_BA, cur.q_KBA, alpha)
            if loss_a is not None:
                actor_total += w * loss_a.detach().double()
            if agent.lanes is not None:  # separate LLMs: disjoint graphs, the two backwards at once
                agent.lanes.run(
                    (w * loss_a).backward if loss_a is not None else _nothing, (w * loss_c).backward
                )
            else:
                (w * (loss_c if loss_a is None else loss_c + loss_a)).backward()
            # The chunk's graph is freed: hand its pages back, so RSS stays one chunk's (accumulate.py).
            release_freed_memory(agent.device, len(chunks))
            critic_total += w * loss_c.detach().double()
            entropies.append(sac.entropy(cur.log_pi_BA.detach(), cur.mask_BA))
            n_actions.append(cur.mask_BA.sum(-1))
            idx = b.action_ids.view(1, -1, 1).expand(cur.q_KBA.shape[0], -1, 1)
            q_taken.append(cur.q_KBA.detach().gather(-1, idx).squeeze(-1).min(0).values)
            targets.append(target_B)
        if cfg.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(
                [p for g in self.optimizer.param_groups for p in g["params"]], cfg.max_grad_norm
            )
        self.optimizer.step()
        entropy_B, n_actions_B = torch.cat(entropies), torch.cat(n_actions)
        # Alpha follows the entropy only once the actor learns: during warm-up the policy is frozen
        # by design, and moving alpha against a policy that cannot respond would only drift it.
        alpha_loss = self.alpha.update(entropy_B, n_actions_B) if not warmup else 0.0
        agent.update_target(self.tau)
        self.n_grad_steps += 1
        return {
            "train/critic_loss": float(critic_total),
            "train/actor_loss": float(actor_total) if not warmup else float("nan"),
            "train/alpha_loss": alpha_loss,
            "train/alpha": alpha,
            "train/entropy": float(entropy_B.mean()),
            "train/entropy_max": float(n_actions_B.float().log().mean()),
            "train/q_mean": float(torch.cat(q_taken).mean()),
            "train/target_mean": float(torch.cat(targets).mean()),
            "train/warmup": float(warmup),
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "alpha": self.alpha.state_dict(),
            "n_grad_steps": self.n_grad_steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.alpha.load_state_dict(state["alpha"])
        self.n_grad_steps = int(state["n_grad_steps"])


# ---------------------------------------------------------------------------------------------------
# PPO
# ---------------------------------------------------------------------------------------------------


class PPOUpdater:
    """PPO-GLAM gradient steps: clipped policy loss + value loss - entropy bonus (Table 1).

    The value head V(s) reads the LLM's prompt state, so it shares the LLM (LoRA) weights with the
    policy, as in GLAM; one Adam optimises both at ``lr``.
    """

    def __init__(self, agent: LLMAgent, cfg: PPOConfig):
        self.agent = agent
        self.cfg = cfg
        groups = agent.parameter_groups()
        self.params = [p for name in ("llm", "value") for p in groups[name]]
        self.optimizer = torch.optim.Adam(self.params, lr=cfg.lr)

    def update(self, batch: PPOBatch) -> dict[str, float]:
        cfg = self.cfg
        batch = batch.to(self.agent.device)  # the one place a batch reaches the model's device
        size = len(batch.prompts)
        advantages_B = ppo.normalize(batch.advantages) if cfg.normalize_advantages else batch.advantages
        self.optimizer.zero_grad()
        # float64 sums on the device, read once after the step (as in SACUpdater.update): no sync per chunk.
        totals = {
            k: torch.zeros((), dtype=torch.float64, device=self.agent.device)
            for k in ("policy", "value", "entropy", "kl", "clip")
        }
        chunks = chunk_slices(size, cfg.chunk_size)
        for rows in chunks:
            b = slice_batch(batch, rows)
            w = chunk_weight(rows, size)
            out = self.agent.evaluate(b.prompts, b.actions, v=True)
            assert out.v_B is not None
            new_log_prob_B = out.log_pi_BA.gather(-1, b.action_ids.view(-1, 1)).squeeze(-1)
            loss_pi = ppo.clipped_policy_loss(
                new_log_prob_B, b.old_log_probs, advantages_B[rows], cfg.clip_range
            )
            old_v = b.old_values if cfg.clip_value_loss else None
            loss_v = ppo.value_loss(out.v_B, b.returns, old_v, cfg.clip_range)
            ent = ppo.masked_entropy(out.log_pi_BA, out.mask_BA)
            (w * (loss_pi + cfg.vf_coef * loss_v - cfg.ent_coef * ent)).backward()
            release_freed_memory(self.agent.device, len(chunks))
            with torch.no_grad():
                log_ratio_B = new_log_prob_B - b.old_log_probs
                totals["kl"] += w * ((log_ratio_B.exp() - 1) - log_ratio_B).mean().double()  # Schulman's k3
                totals["clip"] += w * ((log_ratio_B.exp() - 1).abs() > cfg.clip_range).float().mean().double()
            totals["policy"] += w * loss_pi.detach().double()
            totals["value"] += w * loss_v.detach().double()
            totals["entropy"] += w * ent.detach().double()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)
        self.optimizer.step()
        return {
            "train/actor_loss": float(totals["policy"]),
            "train/critic_loss": float(totals["value"]),
            "train/entropy": float(totals["entropy"]),
            "train/approx_kl": float(totals["kl"]),
            "train/clip_fraction": float(totals["clip"]),
            "train/grad_norm": float(grad_norm),
        }

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
