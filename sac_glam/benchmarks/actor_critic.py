"""``sac-glam bench actor-critic RUN_DIR...``: does a SAC run's actor act on what its critic knows?

Loads each run's final checkpoint (local backend) and prints two things:

- **evaluation success** on ``--episodes`` seeded train-goal episodes (the loop's ``evaluate``) of three
  policies from the same checkpoint: pi sampled (what the learning test measures), argmax pi, and
  argmax min_k Q (the critic acting greedily);
- on ``--states`` states labelled with the first action of a shortest plan (``sac-glam probe``'s
  ``expert_states``): the mass pi and p_Q = softmax(min_k Q / alpha) (the ``forward_kl`` actor loss's
  target) put on the expert's action, and KL(p_Q || pi), the part of that loss the actor has not learnt.

A run whose critic acts well while pi does not is limited by its actor, not by what it has learnt to
value; ``docs/robustness.md`` reads these numbers for the learning test's runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
import yaml

from sac_glam.backends.base import ActOutput
from sac_glam.config import Config, from_raw
from sac_glam.helptext import plain


class _QPolicy:
    """A backend stand-in whose policy is argmax min_k Q (one-hot), for ``evaluate``."""

    def __init__(self, agent: Any):
        self.agent = agent

    def act(self, prompts: list[str], actions: list[list[str]], *, value: bool = False) -> ActOutput:
        with torch.no_grad():
            out = self.agent.evaluate(prompts, actions, q=True)
        q_BA = out.q_KBA.min(0).values.masked_fill(~out.mask_BA, -torch.inf)
        log_pi_BA = torch.log_softmax(q_BA / 1e-6, -1).masked_fill(~out.mask_BA, 0.0)
        return ActOutput(log_pi_BA, out.mask_BA, None)


def load_run(path: Path, prog: str, algos: tuple[str, ...] = ("sac",)) -> tuple[Config, dict[str, Any], Any]:
    """(config, checkpoint, local backend in eval mode) of a run directory's newest readable checkpoint.

    ``path`` may also be a checkpoint file (a copy such as ``RUN_DIR/snapshots/step10016.pt``): the
    config is read from ``config.yaml`` beside it or one directory up. Errors are one line naming ``prog``.
    """
    from sac_glam.run.checkpoint import FORMAT, decode, load_checkpoint
    from sac_glam.run.factory import make_backend

    run_dir = path if path.is_dir() else path.parent
    if not (run_dir / "config.yaml").is_file() and (run_dir.parent / "config.yaml").is_file():
        run_dir = run_dir.parent
    if not (run_dir / "config.yaml").is_file():
        raise SystemExit(f"{prog}: {path} is not a run directory (no config.yaml)")
    cfg: Config = from_raw(yaml.safe_load((run_dir / "config.yaml").read_text()))
    if cfg.train.algo not in algos or cfg.train.backend != "local":
        raise SystemExit(f"{prog}: {path} is not a local-backend {' or '.join(a.upper() for a in algos)} run")
    if path.is_dir():
        ckpt = load_checkpoint(path)
    else:  # weights_only: a copied checkpoint is data, like the run's own (sac_glam/run/checkpoint.py)
        raw = torch.load(path, map_location="cpu", weights_only=True)
        ckpt = (
            decode({k: v for k, v in raw.items() if k != "format"}) if raw.get("format") == FORMAT else None
        )
    if ckpt is None:
        raise SystemExit(f"{prog}: no readable checkpoint in {path}")
    backend: Any = make_backend(cfg)
    backend.load_state_dict(ckpt["backend"])
    backend.agent.eval()
    return cfg, ckpt, backend


def diagnose(run_dir: Path, episodes: int, n_states: int, seed: int) -> dict[str, float]:
    from sac_glam.analysis.probe import expert_states
    from sac_glam.envs.playground_text import PlaygroundText
    from sac_glam.run.evaluation import evaluate

    cfg, ckpt, backend = load_run(run_dir, "sac-glam bench actor-critic")
    cfg.train.eval_episodes = episodes
    out: dict[str, float] = {"step": float(ckpt["loop"]["steps"]), "alpha": backend.updater.alpha.value}
    policies: list[tuple[str, Any, bool]] = [("pi", backend, False), ("argmax_pi", backend, True),
                                             ("argmax_q", _QPolicy(backend.agent), True)]  # fmt: skip
    for name, policy, greedy in policies:
        cfg.train.eval_greedy = greedy
        out[f"success/{name}"] = evaluate(policy, cfg, "train", seed)["success_rate"]
    data = expert_states(PlaygroundText(cfg.env, split="train"), n_states, seed)
    with torch.no_grad():
        ev = backend.agent.evaluate([p for p, _, _ in data], [a for _, a, _ in data], q=True)
    expert_B1 = torch.tensor([y for *_, y in data]).view(-1, 1)
    q_BA = ev.q_KBA.min(0).values.masked_fill(~ev.mask_BA, -torch.inf)
    p_q_BA = torch.softmax(q_BA / out["alpha"], -1)
    pi_BA = ev.log_pi_BA.exp() * ev.mask_BA
    log_ratio_BA = (p_q_BA.clamp_min(1e-12).log() - pi_BA.clamp_min(1e-12).log()) * ev.mask_BA
    out["expert/pi"] = float(pi_BA.gather(1, expert_B1).mean())
    out["expert/p_q"] = float(p_q_BA.gather(1, expert_B1).mean())
    out["kl_p_q_pi"] = float((p_q_BA * log_ratio_BA).sum(-1).mean())
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="sac-glam bench actor-critic", description=plain(__doc__),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("runs", nargs="+", type=Path, help="run directories (config.yaml + checkpoint.pt)")
    parser.add_argument("--episodes", type=int, default=128, help="evaluation episodes per policy")
    parser.add_argument("--states", type=int, default=300, help="expert-labelled states")
    parser.add_argument("--seed", type=int, default=12345, help="seed of the episodes and states")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"{'run':<40} {'step':>6} {'alpha':>6} | success: {'pi':>5} {'argmax pi':>9} {'argmax Q':>8} | "
          f"expert action: {'pi':>5} {'p_Q':>5} {'KL(p_Q||pi)':>11}")  # fmt: skip
    for run in args.runs:
        r = diagnose(run, args.episodes, args.states, args.seed)
        print(f"{str(run)[-40:]:<40} {r['step']:>6.0f} {r['alpha']:>6.3f} | {'':9}{r['success/pi']:>5.2f} "
              f"{r['success/argmax_pi']:>9.2f} {r['success/argmax_q']:>8.2f} | {'':15}{r['expert/pi']:>5.2f} "
              f"{r['expert/p_q']:>5.2f} {r['kl_p_q_pi']:>11.2f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
