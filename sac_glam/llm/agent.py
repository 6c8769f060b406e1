"""The LLM agent: policy (the LLM's action scores), critic heads, target critic and value head.

One LLM forward per call serves the policy and the heads (``forward_actions`` returns log-probs and
hidden states together), so acting and the critic share the LLM work.

Critic variants (Appendix B), chosen by :class:`~sac_glam.config.CriticConfig`:

- ``input``: ``prompt_action`` (Q(s,a) from the state after prompt + action, one output) or ``prompt``
  (Q for every action of ``ALL_ACTIONS`` from the prompt state).
- ``backprop_llm``: the critic's gradients flow into the shared LLM/LoRA weights, or the critic reads a
  detached hidden state (the head alone learns). The policy's log pi is never detached.
- ``target``: ``head`` = Polyak copies of the Q heads reading the online LLM's (detached) features, the
  same forward; ``adapter`` = also a Polyak copy of the LoRA adapter (peft adapter ``target``), which
  costs one extra no-grad forward with that adapter active.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from sac_glam.config import CriticConfig, ModelConfig
from sac_glam.envs.goals import ALL_ACTIONS
from sac_glam.llm.heads import ActionInputQ, PromptInputQ, ValueHead, polyak_update
from sac_glam.llm.lanes import Lanes
from sac_glam.llm.models import Pretrainer, autocast_dtype, base_model, load_model, lora_config
from sac_glam.llm.scoring import ActionForward, HiddenRequest, forward_actions

ONLINE_ADAPTER = "default"
TARGET_ADAPTER = "target"


@dataclass
class AgentOutput:
    """What :meth:`LLMAgent.evaluate` returns; padded entries are 0, read them through ``mask_BA``."""

    log_pi_BA: Tensor
    """(B, A) log pi(a|s) (eq. 2 or the configured normalisation)."""
    logp_BA: Tensor
    """(B, A) summed token log-probs of each action (eq. 1)."""
    mask_BA: Tensor
    """(B, A) bool, True where an action exists."""
    q_KBA: Tensor | None = None
    """(K, B, A) online Q-values of the K critics (with gradients)."""
    target_q_KBA: Tensor | None = None
    """(K, B, A) target Q-values (no gradients)."""
    v_B: Tensor | None = None
    """(B,) state values V(s) (PPO)."""


@dataclass
class ParamGroups:
    """Trainable parameters by role (each optimiser picks its groups and learning rates)."""

    llm_params: list[nn.Parameter]
    """LoRA adapter weights (``lora``) or every LLM weight (full fine-tuning)."""
    critic_params: list[nn.Parameter]
    """The online Q heads."""
    value_params: list[nn.Parameter]
    """The value head (empty without ``need_value``)."""


class LLMAgent(nn.Module):
    """LLM policy + Q heads (+ targets) + optional value head, built from the config."""

    def __init__(
        self,
        model_cfg: ModelConfig,
        critic_cfg: CriticConfig,
        need_value: bool = False,
        device: torch.device | str = "cpu",
        pretrain: Pretrainer | None = None,
    ):
        """``device``: where the agent will run (``make_agent`` moves it there); a 4-bit LLM is loaded
        there directly, with that device's compute dtype (``llm/models.py``). ``pretrain``: how a tiny preset
        with ``tiny.pretrain_steps > 0`` is text-pretrained on a cache miss (:func:`load_model`)."""
        super().__init__()
        if critic_cfg.target == "adapter" and not model_cfg.lora:
            raise ValueError(
                "critic.target='adapter' needs model.lora=true (the target copies the LoRA adapter)"
            )
        if critic_cfg.n_critics < 1:
            raise ValueError(f"critic.n_critics must be >= 1, got {critic_cfg.n_critics}")
        self.model_cfg = model_cfg
        self.critic_cfg = critic_cfg
        loaded = load_model(model_cfg, device, pretrain)
        self.llm = loaded.model
        self.tokenizer = loaded.tokenizer
        self.family = loaded.family
        self.normalization = model_cfg.normalization
        hidden_size = int(base_model(self.llm).config.hidden_size)
        width, k = critic_cfg.width, critic_cfg.n_critics
        self.q: ActionInputQ | PromptInputQ
        if critic_cfg.input == "prompt_action":
            self.q = ActionInputQ(hidden_size, width, k)
        else:
            self.q = PromptInputQ(hidden_size, width, k, ALL_ACTIONS)
        self.target_q = copy.deepcopy(self.q)
        self.target_q.requires_grad_(False)
        self.value = ValueHead(hidden_size, width) if need_value else None

        # critic.share_llm=false: the critic reads its own copy of the LLM (standard SAC's separate
        # actor and critic networks). Built after the policy LLM, so the two start from different
        # random weights for the tiny presets and from the same pretrained weights otherwise.
        self.critic_llm: Any = None
        if not critic_cfg.share_llm:
            if critic_cfg.target == "adapter":
                raise ValueError(
                    "critic.target='adapter' needs critic.share_llm=true (it copies the shared adapter)"
                )
            self.critic_llm = load_model(model_cfg, device, pretrain).model
            self.critic_llm.requires_grad_(critic_cfg.backprop_llm)
            self.critic_llm.eval()
        # critic.target='network': the target Q reads a Polyak copy of the critic LLM, not the online one.
        self.target_critic_llm: Any = None
        if critic_cfg.target == "network":
            if self.critic_llm is None:
                raise ValueError(
                    "critic.target='network' needs critic.share_llm=false (it copies the critic LLM)"
                )
            self.target_critic_llm = copy.deepcopy(self.critic_llm)
            self.target_critic_llm.requires_grad_(False)

        self.lanes: Lanes | None = None
        """Set by ``make_agent`` (``train.parallel_llms``): the critic LLM's passes on their own thread."""

        self._adapter_pairs: list[tuple[str, str]] = []
        if critic_cfg.target == "adapter":
            self._add_target_adapter()
        self._llm_trainable = [p for p in self.llm.parameters() if p.requires_grad]
        self.llm.eval()

    @property
    def device(self) -> torch.device:
        """Where the heads live: the device updates move their batches to (``make_agent`` puts the
        LLM there too; a 4-bit LLM is placed there by its ``device_map``)."""
        return next(self.q.parameters()).device

    # ------------------------------------------------------------------------------------------------
    # Target adapter

    def _add_target_adapter(self) -> None:
        flags = {name: p.requires_grad for name, p in self.llm.named_parameters()}
        self.llm.add_adapter(TARGET_ADAPTER, lora_config(self.model_cfg, base_model(self.llm)))
        params = dict(self.llm.named_parameters())
        for name, p in params.items():
            p.requires_grad_(flags.get(name, False))  # the online flags, target frozen
        marker_online, marker_target = f".{ONLINE_ADAPTER}.", f".{TARGET_ADAPTER}."
        self._adapter_pairs = [
            (name, name.replace(marker_online, marker_target))
            for name in params
            if "lora_" in name and marker_online in name
        ]
        missing = [t for _, t in self._adapter_pairs if t not in params]
        n_target = sum(1 for name in params if "lora_" in name and marker_target in name)
        if missing or n_target != len(self._adapter_pairs):
            raise RuntimeError(f"target adapter does not mirror the online adapter (missing: {missing[:3]})")
        polyak_update(*self._adapter_params(), tau=1.0)  # start as an exact copy

    def _adapter_params(self) -> tuple[list[Tensor], list[Tensor]]:
        params = dict(self.llm.named_parameters())
        return [params[o] for o, _ in self._adapter_pairs], [params[t] for _, t in self._adapter_pairs]

    @contextmanager
    def _active_adapter(self, name: str) -> Iterator[None]:
        """Run the LLM with adapter ``name``; restores the online adapter and every ``requires_grad``
        flag afterwards (peft's ``set_adapter`` also toggles them, and an open autograd graph of the
        online forward must still reach its leaves at ``backward``)."""
        flags = [(p, p.requires_grad) for p in self.llm.parameters()]
        self.llm.set_adapter(name)
        try:
            yield
        finally:
            self.llm.set_adapter(ONLINE_ADAPTER)
            for p, flag in flags:
                if p.requires_grad != flag:
                    p.requires_grad_(flag)

    # ------------------------------------------------------------------------------------------------
    # Forward

    def train(self, mode: bool = True) -> LLMAgent:
        """Heads follow ``mode``; the LLM stays in eval mode (no dropout: the policy that acts must be
        the one that is scored in updates)."""
        super().train(mode)
        self.llm.eval()
        if self.critic_llm is not None:
            self.critic_llm.eval()
        return self

    def _forward(
        self, prompts: list[str], actions: list[list[str]], hidden: HiddenRequest, model: Any = None
    ) -> ActionForward:
        # The critic LLM's log-probs are never read: its forward skips the constrained normalisation
        # (a prefix-tree pass per state) and takes the plain softmax.
        # The LLM runs under bf16 autocast where the device supports it (docs/devices.md); the scorer
        # takes the log-softmax of fp32 logits (``keep_output_head_fp32``) and the heads, called after
        # this returns, run in fp32 on ``.float()`` hidden states.
        dtype = autocast_dtype(self.device)
        with torch.autocast(self.device.type, dtype=dtype, enabled=True) if dtype else nullcontext():
            return forward_actions(
                self.llm if model is None else model,
                self.tokenizer,
                prompts,
                actions,
                family=self.family,
                minibatch_size=self.model_cfg.minibatch_size,
                normalization=self.normalization if model is None else "sum",
                hidden=hidden,
            )

    def _q_values(
        self, heads: nn.Module, fwd: ActionForward, actions: list[list[str]], detach: bool
    ) -> Tensor:
        if isinstance(self.q, ActionInputQ):
            assert fwd.action_hidden_BAH is not None
            h = fwd.action_hidden_BAH
            index = None
        else:
            assert fwd.prompt_hidden_BH is not None
            h = fwd.prompt_hidden_BH
            index = self.q.action_indices(actions, device=fwd.mask_BA.device)
        h = h.float()
        q_KBA: Tensor = heads(h.detach() if detach else h, fwd.mask_BA, index)
        return q_KBA

    def evaluate(
        self,
        prompts: list[str],
        actions: list[list[str]],
        *,
        q: bool = False,
        v: bool = False,
        target_q: bool = False,
        freeze_policy: bool = False,
    ) -> AgentOutput:
        """Policy (always), online Q (``q``), target Q (``target_q``, no grad) and V (``v``) for B states.

        One LLM forward gives log pi and the hidden states of the online heads; target Q with
        ``target='head'`` reuses them (detached), with ``target='adapter'`` it runs one more no-grad
        forward with the target adapter.

        ``freeze_policy``: no gradient of Q reaches the policy's weights, whatever
        ``critic.backprop_llm`` says (SAC's warm-up, Section 2.2: the critic learns on top of the
        pre-trained actor without moving it). With a shared LLM the Q heads then read detached hidden
        states; a separate critic LLM (``share_llm=false``) is the critic's own and still learns.
        """
        if self.critic_llm is not None:
            return self._evaluate_separate(prompts, actions, q=q, v=v, target_q=target_q)
        detach_q = freeze_policy or not self.critic_cfg.backprop_llm
        critic_hidden = self.q.hidden
        head_target = target_q and self.critic_cfg.target == "head"
        need_action = (q or head_target) and critic_hidden == "action"
        need_prompt = v or ((q or head_target) and critic_hidden == "prompt")
        hidden: HiddenRequest = (
            "both"
            if need_action and need_prompt
            else "action"
            if need_action
            else "prompt"
            if need_prompt
            else "none"
        )
        fwd = self._forward(prompts, actions, hidden)
        out = AgentOutput(log_pi_BA=fwd.log_pi_BA, logp_BA=fwd.logp_BA, mask_BA=fwd.mask_BA)
        if q:
            out.q_KBA = self._q_values(self.q, fwd, actions, detach=detach_q)
        if target_q:
            with torch.no_grad():
                if head_target:
                    out.target_q_KBA = self._q_values(self.target_q, fwd, actions, detach=True)
                else:
                    with self._active_adapter(TARGET_ADAPTER):
                        fwd_t = self._forward(prompts, actions, critic_hidden)
                    out.target_q_KBA = self._q_values(self.target_q, fwd_t, actions, detach=True)
        if v:
            out.v_B = self._value(fwd)
        return out

    def _evaluate_separate(
        self, prompts: list[str], actions: list[list[str]], *, q: bool, v: bool, target_q: bool
    ) -> AgentOutput:
        """:meth:`evaluate` with ``critic.share_llm=false``: the policy LLM gives log pi (and V), the
        critic LLM the hidden states of the Q heads (one forward for online and target heads; the
        target LLM's own with ``critic.target='network'``). With :attr:`lanes` the critic's part runs
        on its own thread while the policy's runs on the caller's (``llm/lanes.py``)."""

        def policy() -> ActionForward:
            return self._forward(prompts, actions, "prompt" if v else "none")

        def critic() -> tuple[Tensor | None, Tensor | None]:
            q_KBA = target_q_KBA = None
            target_llm = self.target_critic_llm
            if q or (target_q and target_llm is None):
                with torch.set_grad_enabled(q and torch.is_grad_enabled()):
                    fwd_c = self._forward(prompts, actions, self.q.hidden, model=self.critic_llm)
                if q:
                    q_KBA = self._q_values(self.q, fwd_c, actions, detach=not self.critic_cfg.backprop_llm)
            if target_q:
                with torch.no_grad():
                    fwd_t = (
                        fwd_c
                        if target_llm is None
                        else self._forward(prompts, actions, self.q.hidden, model=target_llm)
                    )
                    target_q_KBA = self._q_values(self.target_q, fwd_t, actions, detach=True)
            return q_KBA, target_q_KBA

        if self.lanes is not None and (q or target_q):
            fwd, (q_KBA, target_q_KBA) = self.lanes.run(policy, critic)
        else:
            fwd, (q_KBA, target_q_KBA) = policy(), critic()
        out = AgentOutput(log_pi_BA=fwd.log_pi_BA, logp_BA=fwd.logp_BA, mask_BA=fwd.mask_BA)
        out.q_KBA, out.target_q_KBA = q_KBA, target_q_KBA
        if v:
            out.v_B = self._value(fwd)
        return out

    def _value(self, fwd: ActionForward) -> Tensor:
        """V(s) from the policy LLM's prompt state. GLAM: the value head shares the LLM and trains it
        (no detach), whatever the critic does."""
        if self.value is None:
            raise ValueError("this agent has no value head (build it with need_value=True)")
        assert fwd.prompt_hidden_BH is not None
        return self.value(fwd.prompt_hidden_BH.float())

    # ------------------------------------------------------------------------------------------------
    # Targets and parameters

    @torch.no_grad()
    def update_target(self, tau: float) -> None:
        """Polyak step ``target <- tau * online + (1 - tau) * target`` of the Q heads (and of the target
        adapter or target critic LLM)."""
        polyak_update(self.q.parameters(), self.target_q.parameters(), tau)
        if self.target_critic_llm is not None:
            polyak_update(self.critic_llm.parameters(), self.target_critic_llm.parameters(), tau)
        if self._adapter_pairs:
            polyak_update(*self._adapter_params(), tau=tau)

    def trainable_parameters(self) -> ParamGroups:
        return ParamGroups(
            llm_params=list(self._llm_trainable),
            critic_params=list(self.q.parameters())
            + (
                [p for p in self.critic_llm.parameters() if p.requires_grad]
                if self.critic_llm is not None
                else []
            ),
            value_params=list(self.value.parameters()) if self.value is not None else [],
        )

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """:meth:`trainable_parameters` as ``{"llm": ..., "critic": ..., "value": ...}``."""
        g = self.trainable_parameters()
        return {"llm": g.llm_params, "critic": g.critic_params, "value": g.value_params}

    # ------------------------------------------------------------------------------------------------
    # State: in memory (checkpoints) and on disk (peft-loadable)

    def _llm_state(self) -> dict[str, Tensor]:
        if self.model_cfg.lora:
            return {n: p.detach() for n, p in self.llm.named_parameters() if "lora_" in n}
        return {n: t.detach() for n, t in self.llm.state_dict().items()}

    def _heads_state(self) -> dict[str, Tensor]:
        state = {f"q.{k}": v for k, v in self.q.state_dict().items()}
        state.update({f"target_q.{k}": v for k, v in self.target_q.state_dict().items()})
        if self.value is not None:
            state.update({f"value.{k}": v for k, v in self.value.state_dict().items()})
        return state

    def _load_heads_state(self, state: dict[str, Tensor]) -> None:
        def part(prefix: str) -> dict[str, Tensor]:
            return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}

        self.q.load_state_dict(part("q."))
        self.target_q.load_state_dict(part("target_q."))
        if self.value is not None:
            self.value.load_state_dict(part("value."))
        elif part("value."):
            raise ValueError("state has a value head but this agent was built without need_value")

    def trainable_state_dict(self) -> dict[str, dict[str, Tensor]]:
        """Everything that training changes: LLM (LoRA adapters incl. the target one, or all weights),
        Q heads, target Q heads, value head. Tensors alias the live ones (save before training on)."""
        state = {"llm": self._llm_state(), "heads": self._heads_state()}
        if self.critic_llm is not None:
            state["critic_llm"] = {n: t.detach() for n, t in self.critic_llm.state_dict().items()}
        if self.target_critic_llm is not None:
            state["target_critic_llm"] = {
                n: t.detach() for n, t in self.target_critic_llm.state_dict().items()
            }
        return state

    @torch.no_grad()
    def load_trainable_state_dict(self, state: dict[str, dict[str, Tensor]]) -> None:
        if self.model_cfg.lora:
            params = dict(self.llm.named_parameters())
            expected = {n for n in params if "lora_" in n}
            if set(state["llm"]) != expected:
                diff = sorted(set(state["llm"]) ^ expected)[:5]
                raise ValueError(f"LoRA state does not match this agent's adapters (e.g. {diff})")
            for n, t in state["llm"].items():
                params[n].copy_(t)
        else:
            self.llm.load_state_dict(state["llm"], strict=True)
        self._load_heads_state(state["heads"])
        if self.critic_llm is not None:
            self.critic_llm.load_state_dict(state["critic_llm"], strict=True)
        if self.target_critic_llm is not None:
            if "target_critic_llm" not in state:
                raise ValueError("state has no target critic LLM, but this agent has critic.target='network'")
            self.target_critic_llm.load_state_dict(state["target_critic_llm"], strict=True)

    def save(self, directory: str | Path) -> None:
        """Write ``directory``: ``adapter/`` (peft ``save_pretrained``: reload with
        ``PeftModel.from_pretrained``; the target adapter in ``adapter/target/``) or ``model/`` (full
        weights, ``from_pretrained``-loadable), ``tokenizer/``, ``heads.safetensors``, ``agent.json``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        if self.model_cfg.lora:
            self.llm.save_pretrained(str(d / "adapter"), selected_adapters=self._adapter_names())
        else:
            self.llm.save_pretrained(str(d / "model"), safe_serialization=True)
        if self.critic_llm is not None:
            self.critic_llm.save_pretrained(str(d / "critic_model"), safe_serialization=True)
        if self.target_critic_llm is not None:
            self.target_critic_llm.save_pretrained(str(d / "target_critic_model"), safe_serialization=True)
        self.tokenizer.save_pretrained(str(d / "tokenizer"))
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in self._heads_state().items()},
            d / "heads.safetensors",
        )
        meta = {
            "model": self.model_cfg.name,
            "family": self.family,
            "lora": self.model_cfg.lora,
            "adapters": self._adapter_names(),
            "critic_input": self.critic_cfg.input,
            "n_critics": self.critic_cfg.n_critics,
        }
        (d / "agent.json").write_text(json.dumps(meta, indent=2))

    def _adapter_names(self) -> list[str]:
        return [ONLINE_ADAPTER, TARGET_ADAPTER] if self._adapter_pairs else [ONLINE_ADAPTER]

    @torch.no_grad()
    def load(self, directory: str | Path) -> None:
        """Load what :meth:`save` wrote into this agent (built with the same configs)."""
        d = Path(directory)
        device = next(self.q.parameters()).device
        if self.model_cfg.lora:
            from peft import set_peft_model_state_dict
            from peft.utils import load_peft_weights

            for name in self._adapter_names():
                path = d / "adapter" if name == ONLINE_ADAPTER else d / "adapter" / name
                weights = load_peft_weights(str(path), device=str(device))
                result = set_peft_model_state_dict(self.llm, weights, adapter_name=name)
                unexpected = getattr(result, "unexpected_keys", [])
                if unexpected:
                    raise ValueError(f"adapter {name!r} in {path} has unexpected keys, e.g. {unexpected[:3]}")
        else:
            self._load_full_weights(d / "model")
        if self.critic_llm is not None:
            self._load_full_weights(d / "critic_model", self.critic_llm)
        if self.target_critic_llm is not None:
            self._load_full_weights(d / "target_critic_model", self.target_critic_llm)
        self._load_heads_state({k: v.to(device) for k, v in load_file(d / "heads.safetensors").items()})

    def _load_full_weights(self, path: Path, model: Any = None) -> None:
        files = sorted(path.glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"no *.safetensors weights in {path}")
        state: dict[str, Tensor] = {}
        for f in files:
            state.update(load_file(f))
        net = base_model(self.llm if model is None else model)
        missing, unexpected = net.load_state_dict(state, strict=False)
        # save_pretrained drops tied copies (T5's embed_tokens / lm_head share ``shared``): a missing key
        # is fine only when its tensor is one that was loaded.
        live = net.state_dict()
        loaded_ptrs = {live[k].data_ptr() for k in state if k in live}
        really_missing = [k for k in missing if live[k].data_ptr() not in loaded_ptrs]
        if unexpected or really_missing:
            raise ValueError(
                f"weights in {path} do not match: missing {really_missing[:3]}, unexpected {unexpected[:3]}"
            )
