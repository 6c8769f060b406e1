"""The paper path on a CUDA machine in one run: ``scripts/gpu_check.sh`` calls this (docs/paper_scale.md).

Steps, each printing PASS with its numbers or raising (exit 1, ``GPU CHECK FAILED at step ...``):
1. ``make-model`` flan-t5-base and gpt2 (no download); 2. scorer exactness against a one-pair brute
force (``sum`` log-probs, ``constrained`` pi; fp32, bf16 autocast, 4-bit); 3. one SAC and one PPO update
at batch 256 with LoRA, with and without 4-bit; 4. SAC-GLAM+HER for 2,048 environment steps; 5. a resume.
Tolerance on summed log-probs and constrained log pi: |batched - one pair| <= atol + rtol |one pair|,
fp32 1e-3 + 1e-5 |ref|, bf16 0.05 + 1e-2 |ref|. Relative because a random flan-t5-base (untied head,
std-1 init) gives log-probs of hundreds of nats. bf16 keeps 8 mantissa bits (relative step 2^-8 =
0.4%), and on the CPU bf16 autocast moved these log-probs from fp32 by up to 1.7 nats (mean |ref| 406):
1% leaves room for a GPU's different reduction orders with and without padding; a padding or
position bug moves a log-prob by far more. Not yet measured on a GPU.
``--dry``: the same steps on the CPU with CI shapes; ``--cpu-step BATCH``: only time the paper's SAC
step on the flan-t5-base shape on the CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a GPU node has no network: never try the hub

import numpy as np
import torch

#: (atol, rtol) of |batched - one pair| on summed log-probs and constrained log pi (module docstring).
FP32_TOL = (1e-3, 1e-5)
BF16_TOL = (0.05, 1e-2)


class CheckFailed(RuntimeError):
    pass


def expect(ok: bool, message: str) -> None:
    if not ok:
        raise CheckFailed(message)


@dataclass(frozen=True)
class Shapes:
    arch: str
    tiny: bool
    batch: int
    n_envs: int
    train_steps: int
    eval_episodes: int
    extra: tuple[str, ...] = ()
    """Overrides of the paper configs beyond model, budget and evaluation (dry mode only)."""


FULL = Shapes("flan-t5-base", tiny=False, batch=256, n_envs=32, train_steps=2048, eval_episodes=32)
DRY = Shapes("t5-small", tiny=True, batch=32, n_envs=8, train_steps=192, eval_episodes=4,
             extra=("sac.learning_starts=64", "critic.width=64", "train.threads=1"))  # fmt: skip


class Device:
    """Synchronised timing and peak memory: CUDA memory on a GPU, the process's peak RSS on the CPU."""

    def __init__(self, dry: bool):
        self.cuda = not dry
        self.name = "cpu" if dry else "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def reset_peak(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()

    def peak_gib(self) -> float:
        if self.cuda:
            return torch.cuda.max_memory_allocated() / 2**30
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux

    @property
    def peak_label(self) -> str:
        return "peak GPU memory" if self.cuda else "peak RSS (process)"

    def bf16(self) -> bool:
        return torch.cuda.is_bf16_supported() if self.cuda else True


class TimedBackend:
    """A backend that times each ``update`` (synchronised) and remembers its stats."""

    def __init__(self, inner: Any, device: Device):
        self.inner, self.device = inner, device
        self.update_s: list[float] = []
        self.cpu_s: list[float] = []
        """Process CPU time per update: on a shared CPU, closer to the unshared wall time than ``update_s``."""
        self.stats: list[dict[str, float]] = []

    def act(self, prompts: list[str], actions: list[list[str]], *, value: bool = False) -> Any:
        return self.inner.act(prompts, actions, value=value)

    def update(self, batch: Any) -> dict[str, float]:
        self.device.sync()
        t0, c0 = time.perf_counter(), time.process_time()
        stats: dict[str, float] = self.inner.update(batch)
        self.device.sync()
        self.update_s.append(time.perf_counter() - t0)
        self.cpu_s.append(time.process_time() - c0)
        self.stats.append(stats)
        return stats

    def state_dict(self) -> dict[str, Any]:
        return dict(self.inner.state_dict())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state)

    def save_pretrained(self, path: str | Path) -> None:
        self.inner.save_pretrained(path)

    def close(self) -> None:
        self.inner.close()


def one_pair_decisions(lm: Any, prompt: str, action: str) -> tuple[list[int], torch.Tensor]:
    """(action ids, decision logits (L+1, V)) of ONE pair: unpadded, no cache, no masks."""
    from sac_glam.llm.models import base_model

    net, tok = base_model(lm.model), lm.tokenizer
    p = tok(prompt, add_special_tokens=True)["input_ids"]
    a = tok(action, add_special_tokens=False)["input_ids"]
    dev = net.device
    if lm.family == "seq2seq":
        dec = [net.config.decoder_start_token_id, *a]
        logits = net(
            input_ids=torch.tensor([p], device=dev), decoder_input_ids=torch.tensor([dec], device=dev)
        )
        return a, logits.logits[0].float()
    logits = net(input_ids=torch.tensor([p + a], device=dev)).logits[0].float()
    return a, logits[len(p) - 1 :]


def brute_force(lm: Any, prompt: str, actions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed log-probs (A,), constrained log pi (A,)) by explicit per-pair forwards and a trie walk."""
    eos = lm.tokenizer.eos_token_id
    pairs = [one_pair_decisions(lm, prompt, a) for a in actions]
    seqs = [tuple(ids) for ids, _ in pairs]
    logp, log_pi = [], []
    for seq, (_, decision) in zip(seqs, pairs, strict=True):
        logp_t = torch.log_softmax(decision[: len(seq)], -1).gather(
            -1, torch.tensor(seq, device=decision.device)[:, None]
        )
        logp.append(logp_t.sum())
        total = torch.zeros((), device=decision.device)
        for j in range(len(seq) + 1):
            prefix = seq[:j]
            options = sorted({s[j] for s in seqs if len(s) > j and s[:j] == prefix})
            if prefix in seqs:
                options.append(eos)  # stopping here is a choice
            if j == len(seq) and options == [eos]:
                continue  # only "stop" remains: probability 1
            chosen = seq[j] if j < len(seq) else eos
            total = total + decision[j, chosen] - torch.logsumexp(decision[j, options], 0)
        log_pi.append(total)
    return torch.stack(logp), torch.stack(log_pi)


def check_scorer(model_dir: Path, device: Device, variant: str) -> dict[str, float]:
    """|batched - one pair| <= atol + rtol |one pair| for summed log-probs and constrained log pi, over
    4 scenes x 8 actions and scoring minibatches of 512 and 5 rows."""
    from sac_glam.benchmarks.scoring import scene_states
    from sac_glam.config import ModelConfig
    from sac_glam.llm.models import load_model, supports_bf16
    from sac_glam.llm.scoring import forward_actions

    torch.manual_seed(0)
    lm = load_model(ModelConfig(name=str(model_dir), lora=True, load_in_4bit=variant == "4bit"), device.name)
    if variant != "4bit":
        lm.model.to(device.name)
    # 4-bit layers compute in bf16 where the device has it natively (docs/devices.md), else fp32.
    compute_bf16 = variant == "bf16" or (variant == "4bit" and supports_bf16(torch.device(device.name)))
    atol, rtol = BF16_TOL if compute_bf16 else FP32_TOL
    autocast = torch.autocast(device.name, dtype=torch.bfloat16, enabled=variant == "bf16")
    prompts, actions = scene_states(4)
    worst = {"abs": 0.0, "ratio": 0.0, "max_abs_ref": 0.0}  # ratio: |delta| / (atol + rtol |ref|)
    with torch.no_grad(), autocast:
        refs = [brute_force(lm, p, a) for p, a in zip(prompts, actions, strict=True)]
        for mb in (512, 5):
            fwd = forward_actions(lm.model, lm.tokenizer, prompts, actions, minibatch_size=mb)
            con = forward_actions(
                lm.model, lm.tokenizer, prompts, actions, minibatch_size=mb, normalization="constrained"
            )
            for b, (ref_logp, ref_log_pi) in enumerate(refs):
                n = len(actions[b])
                for got, ref in ((fwd.logp_BA[b, :n], ref_logp), (con.log_pi_BA[b, :n], ref_log_pi)):
                    delta = (got.float() - ref).abs()
                    worst["abs"] = max(worst["abs"], delta.max().item())
                    worst["ratio"] = max(worst["ratio"], (delta / (atol + rtol * ref.abs())).max().item())
                    worst["max_abs_ref"] = max(worst["max_abs_ref"], ref.abs().max().item())
    name = f"scorer {model_dir.name} {variant}"
    report = f"max |delta| {worst['abs']:.2e} nats, tolerance {atol} + {rtol} |ref| (|ref| up to {worst['max_abs_ref']:.0f})"
    expect(
        math.isfinite(worst["ratio"]) and worst["ratio"] <= 1.0,
        f"{name}: {report}, exceeded {worst['ratio']:.1f}x",
    )
    print(f"PASS {name}: {report}, {worst['ratio']:.2f} of it", flush=True)
    return worst


def overrides(model_dir: Path, shapes: Shapes, device: Device, four_bit: bool) -> list[str]:
    return [f"model.name={model_dir}", f"model.load_in_4bit={str(four_bit).lower()}", f"train.device={device.name}",
            f"env.n_envs={shapes.n_envs}", f"sac.batch_size={shapes.batch}", f"ppo.batch_size={shapes.batch}",
            "train.eval_every=0", f"train.eval_episodes={shapes.eval_episodes}", "train.progress=false",
            "train.tensorboard=false", *shapes.extra]  # fmt: skip


def check_update(
    model_dir: Path, shapes: Shapes, device: Device, algo: str, four_bit: bool
) -> dict[str, float]:
    """Collect with the policy until a batch is there, then two gradient steps; time the second."""
    from sac_glam.envs.vector import PlaygroundTextVecEnv
    from sac_glam.run.configs import load_config
    from sac_glam.run.evaluation import sample_actions
    from sac_glam.run.factory import make_backend, make_learner

    extra = [f"ppo.n_steps={shapes.batch}", "ppo.epochs=2"] if algo == "ppo" else []
    cfg = load_config(
        "ppo_glam" if algo == "ppo" else "sac_glam_her",
        [*overrides(model_dir, shapes, device, four_bit), *extra],
    )
    expect(
        cfg.model.lora and cfg.model.load_in_4bit == four_bit, "config did not take the LoRA/4-bit overrides"
    )
    backend = TimedBackend(make_backend(cfg), device)
    learner: Any = make_learner(cfg, np.random.default_rng(0))
    envs = PlaygroundTextVecEnv(cfg.env, split="train", seed=0)
    rng = np.random.default_rng(0)
    obs, steps = envs.reset(), 0
    lora_before = {k: v.detach().clone() for k, v in backend.state_dict()["agent"]["llm"].items()}

    def full() -> bool:
        return learner.ready(steps) if algo == "ppo" else len(learner.buffer) >= shapes.batch

    while not full():
        act = backend.act(obs.prompts, obs.actions, value=algo == "ppo")
        ids = sample_actions(act, rng)
        step = envs.step(ids)
        learner.record(obs, act, ids, step)
        obs, steps = step.obs, steps + envs.n_envs
    device.reset_peak()
    if algo == "ppo":
        learner.update(backend, obs, steps)  # 2 epochs of one minibatch of the whole rollout
    else:
        for _ in range(2):
            backend.update(learner.buffer.sample(shapes.batch, rng))
    name = f"{algo} update batch {shapes.batch} lora {'4bit' if four_bit else 'fp32'}"
    expect(len(backend.update_s) == 2, f"{name}: expected 2 gradient steps, got {len(backend.update_s)}")
    bad = {k: v for s in backend.stats for k, v in s.items() if not math.isfinite(v)}
    expect(not bad, f"{name}: non-finite stats {bad}")
    after = backend.state_dict()["agent"]["llm"]
    expect(
        any(not torch.equal(v, lora_before[k]) for k, v in after.items()), f"{name}: no LoRA weight changed"
    )
    result = {
        "s_per_grad_step": backend.update_s[1],
        "first_step_s": backend.update_s[0],
        "cpu_s_per_grad_step": backend.cpu_s[1],
        "peak_gib": device.peak_gib(),
    }
    print(f"PASS {name}: {result['s_per_grad_step']:.3f} s/grad step (first {result['first_step_s']:.3f} s), "
          f"(process CPU {result['cpu_s_per_grad_step']:.3f} s), {device.peak_label} {result['peak_gib']:.2f} GiB, "
          f"collected {steps} transitions", flush=True)  # fmt: skip
    del backend
    if device.cuda:
        torch.cuda.empty_cache()
    return result


def check_training(model_dir: Path, shapes: Shapes, device: Device, run_dir: Path) -> dict[str, float]:
    """SAC-GLAM+HER for ``train_steps`` transitions, then a resume to ``train_steps + 8 vector steps``."""
    from sac_glam.benchmarks.scoring import scene_states
    from sac_glam.run.checkpoint import load_checkpoint
    from sac_glam.run.configs import load_config
    from sac_glam.run.factory import make_backend
    from sac_glam.run.train import train

    def cfg(total: int) -> Any:
        return load_config("sac_glam_her", [*overrides(model_dir, shapes, device, True), f"train.total_steps={total}",
                                            f"train.run_dir={run_dir}"])  # fmt: skip

    # A rerun with the same --work starts the run afresh: the last one's checkpoint is past train_steps.
    shutil.rmtree(run_dir, ignore_errors=True)
    first = cfg(shapes.train_steps)
    backend = TimedBackend(make_backend(first), device)
    device.reset_peak()
    t0 = time.perf_counter()
    expect(train(first, backend).steps == shapes.train_steps, "training stopped early")
    total_s = time.perf_counter() - t0
    ckpt = load_checkpoint(run_dir)
    loop = SimpleNamespace(**ckpt["loop"])
    expect(
        loop.grad_steps == len(backend.update_s) > 0,
        f"gradient steps: checkpoint {loop.grad_steps}, ran {len(backend.update_s)}",
    )
    result = {"transitions_per_s": loop.steps / loop.wall_s, "s_per_grad_step": float(np.mean(backend.update_s[1:] or backend.update_s)),
              "grad_steps": float(loop.grad_steps), "peak_gib": device.peak_gib(), "wall_s_with_eval": total_s}  # fmt: skip
    print(f"PASS train sac_glam_her {loop.steps} steps: {result['transitions_per_s']:.1f} transitions/s, "
          f"{loop.grad_steps} grad steps at {result['s_per_grad_step']:.3f} s, {device.peak_label} "
          f"{result['peak_gib']:.2f} GiB, {total_s:.0f} s with the final evaluation", flush=True)  # fmt: skip

    # Resume: a fresh model from the directory + the checkpoint acts exactly as the trained one...
    fresh = make_backend(first)
    fresh.load_state_dict(ckpt["backend"])
    prompts, actions = scene_states(8)
    a, b = backend.act(prompts, actions).log_pi_BA, fresh.act(prompts, actions).log_pi_BA
    expect(
        torch.allclose(a, b, atol=1e-6, rtol=0),
        f"reloaded policy differs by {(a - b).abs().max().item():.2e}",
    )
    del fresh
    # ... and the run continues its counters.
    more = shapes.train_steps + 8 * shapes.n_envs
    expect(train(cfg(more)).steps == more, "resumed run did not reach its budget")
    loop2 = SimpleNamespace(**load_checkpoint(run_dir)["loop"])
    expect(
        loop2.grad_steps > loop.grad_steps and loop2.episodes >= loop.episodes, "counters did not continue"
    )
    print(f"PASS resume: {loop.steps} -> {loop2.steps} steps, grad steps {loop.grad_steps} -> {loop2.grad_steps}, "
          f"reloaded log pi max diff {(a - b).abs().max().item():.1e}", flush=True)  # fmt: skip
    return result


def cpu_step(batch: int, work: Path) -> int:
    """Docs' CPU measurement: the paper's SAC step (4-bit + LoRA) on flan-t5-base at ``batch``, in chunks
    of 32 transitions (gradient accumulation: the same gradient as one chunk, bounded memory)."""
    from sac_glam.llm.make_model import make_model

    torch.set_num_threads(1)
    path = work / "models" / "flan-t5-base"
    if not (path / "config.json").exists():
        make_model("flan-t5-base", path)
    shapes = Shapes("flan-t5-base", False, batch, 32, 0, 1, ("train.threads=1", "sac.chunk_size=32"))
    check_update(path, shapes, Device(dry=True), "sac", four_bit=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry", action="store_true", help="CPU, CI shapes: test this script without a GPU")
    parser.add_argument(
        "--work", type=Path, default=None, help="models and runs (default: a temporary directory)"
    )
    parser.add_argument(
        "--cpu-step", type=int, metavar="BATCH", default=0,
        help="only time SAC gradient steps of the full flan-t5-base shape at BATCH on the CPU (1 thread)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.cpu_step:
        return cpu_step(args.cpu_step, args.work or Path(tempfile.mkdtemp(prefix="gpu_check_")))
    shapes = DRY if args.dry else FULL
    device = Device(args.dry)
    if device.cuda and not torch.cuda.is_available():
        print(
            f"GPU CHECK FAILED: torch {torch.__version__} sees no CUDA device; use --dry on a CPU",
            file=sys.stderr,
        )
        return 1
    if args.dry:
        torch.set_num_threads(1)
    work = args.work or Path(tempfile.mkdtemp(prefix="gpu_check_"))
    from sac_glam.llm.make_model import make_model

    gpu = torch.cuda.get_device_name() if device.cuda else "none (dry run on CPU)"
    print(
        f"gpu_check: torch {torch.__version__}, GPU {gpu}, bf16 {device.bf16()}, work dir {work}", flush=True
    )
    results: dict[str, Any] = {"mode": "dry" if args.dry else "gpu", "gpu": gpu, "torch": torch.__version__}
    t_start = time.perf_counter()
    step = "make-model"
    try:
        dirs = {}
        for arch in (shapes.arch, "gpt2"):
            path = work / "models" / (arch + ("-tiny" if shapes.tiny else ""))
            if not (path / "config.json").exists():
                t0 = time.perf_counter()
                make_model(arch, path, tiny=shapes.tiny)
                print(f"PASS make-model {arch}: {path} in {time.perf_counter() - t0:.0f} s", flush=True)
            dirs[arch] = path
        step = "scorer"
        for arch, path in dirs.items():
            for variant in ("fp32", "bf16", "4bit") if device.bf16() else ("fp32", "4bit"):
                results[f"scorer/{arch}/{variant}"] = check_scorer(path, device, variant)
        step = "updates"
        for algo in ("sac", "ppo"):
            for four_bit in (False, True):
                key = f"update/{algo}/{'4bit' if four_bit else 'fp32'}"
                results[key] = check_update(dirs[shapes.arch], shapes, device, algo, four_bit)
        step = "training + resume"
        results["train"] = check_training(dirs[shapes.arch], shapes, device, work / "run")
    except Exception as e:  # any failure: the traceback, then one loud line, exit 1
        traceback.print_exc()
        print(f"GPU CHECK FAILED at step '{step}': {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        raise SystemExit(1) from e
    results["wall_s"] = time.perf_counter() - t_start
    (work / "gpu_check.json").write_text(json.dumps(results, indent=2))
    print(
        f"GPU CHECK PASSED ({results['mode']}) in {results['wall_s']:.0f} s; numbers in {work / 'gpu_check.json'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
