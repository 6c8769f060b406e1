"""``sac-glam bench paper``: the paper's settings at full model size, and Lamorel's scorer beside ours.

On a paper-shaped model (``sac-glam make-model``: flan-t5-base by default, random weights, no download)
with the paper configs unchanged but for ``model.name`` (``sac_glam``: LoRA + 4-bit, ``sum``, 32 envs,
N = 6; ``ppo_glam`` for PPO), one run measures:

- **SAC gradient step**: ``backend.update`` of one replay batch (``--batch``, default the paper's 256;
  the buffer holds random-policy transitions), median of ``--repeats`` after one warm-up step;
- **PPO minibatch**: one ``backend.update`` of a ``--batch`` minibatch of an on-policy rollout;
- **acting step**: one ``backend.act`` of 32 envs (every admissible action of every state scored by the
  policy, no value; on the last backend built, whose policy is the same LLM in both configs), and
  microseconds per scored (prompt, action) pair;
- **peak RSS** of the process after the SAC and PPO phases (before Lamorel's copy of the model), and on
  CUDA the peak GPU memory of each phase and pairs/s;
- **Lamorel's scorer**, when ``lamorel`` is importable: its server-side ``score`` (``HF_LLM.forward``
  with ``__score``, the function ``lm_server.score`` runs, without the process round trip) on a plain
  copy of the model it loads from the same directory, interleaved with our scorer
  (``forward_actions``) on that same model object and the same states (Lamorel tokenises contexts
  without special tokens, so its contexts get the tokenizer's special text, T5's ``</s>``). The table
  gives both times, their ratio and the largest score difference.

Run (the first run writes the model directory; ``--model-dir`` reuses one)::

    sac-glam bench paper                                    # flan-t5-base, batch 256
    sac-glam bench paper --arch t5-small --batch 16 --repeats 2
    PYTHONPATH=. /tmp/lamorel-venv/bin/python -m sac_glam.cli bench paper   # with the Lamorel column
    sac-glam bench paper --tiny --batch 4 --repeats 1       # CI: tiny dims, every field
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sac_glam.benchmarks import print_rows
from sac_glam.config import Config
from sac_glam.envs.vector import PlaygroundTextVecEnv, VecObs
from sac_glam.helptext import plain
from sac_glam.llm.scoring import forward_actions
from sac_glam.run.configs import load_config


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _timed(fn: Callable[[], Any]) -> float:
    _sync()
    start = time.perf_counter()
    fn()
    _sync()
    return time.perf_counter() - start


def _reset_gpu_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def _gpu_peak() -> str:
    return f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB" if torch.cuda.is_available() else ""


def _rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def model_dir(arch: str, given: Path | None, tiny: bool) -> Path:
    """``given``, or a cached ``make-model`` directory for ``arch`` (written on the first run)."""
    if given is not None:
        return given
    from sac_glam.llm.make_model import make_model

    path = Path(tempfile.gettempdir()) / "sac-glam-bench-paper" / (arch + ("-tiny" if tiny else ""))
    if not (path / "config.json").exists():
        make_model(arch, path, tiny=tiny)
    return path


def paper_config(name: str, directory: Path, batch: int, overrides: list[str]) -> Config:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    base = [
        f"model.name={directory}",
        f"train.device={device}",
        "train.progress=false",
        "train.tensorboard=false",
    ]
    # PPO: one rollout of ``batch`` transitions (rounded up to whole vector steps) is one minibatch.
    rollout = -(-batch // 32) * 32
    size = [f"sac.batch_size={batch}", f"ppo.batch_size={rollout}", f"ppo.n_steps={rollout}"]
    return load_config(name, [*base, *size, *overrides])


def states(cfg: Config, n_steps: int, seed: int = 0) -> VecObs:
    """The vector env's observation after ``n_steps`` random steps (some agents hold an object)."""
    envs = PlaygroundTextVecEnv(cfg.env, split="train", seed=seed)
    obs, rng = envs.reset(), np.random.default_rng(seed)
    for _ in range(n_steps):
        obs = envs.step(rng.integers(0, [len(a) for a in obs.actions])).obs
    return obs


def sac_step(cfg: Config, repeats: int) -> tuple[list[tuple[str, str]], Any]:
    """Seconds per SAC gradient step at ``sac.batch_size`` on a buffer of random-policy transitions."""
    from sac_glam.benchmarks.scaling import fill_buffer
    from sac_glam.run.factory import make_backend

    batch = cfg.sac.batch_size
    buffer = fill_buffer(cfg, -(-batch // cfg.env.n_envs) + 1, seed=0)
    backend = make_backend(cfg)
    rng = np.random.default_rng(0)
    _reset_gpu_peak()
    backend.update(buffer.sample(batch, rng))  # warm-up (allocator, lazy init)
    times = [_timed(lambda: backend.update(buffer.sample(batch, rng))) for _ in range(repeats)]
    s = statistics.median(times)
    rows = [(f"SAC gradient step, batch {batch}", f"{s:.3f} s (min {min(times):.3f})")]
    if torch.cuda.is_available():
        rows.append(("  peak GPU memory", _gpu_peak()))
    return rows, backend


class _TimedUpdates:
    """The backend for ``PPOLearner.update``, timing each minibatch's ``update``."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.seconds: list[float] = []

    def act(self, prompts: list[str], actions: list[list[str]], *, value: bool = False) -> Any:
        return self.backend.act(prompts, actions, value=value)

    def update(self, batch: Any) -> dict[str, float]:
        start = time.perf_counter()
        stats: dict[str, float] = self.backend.update(batch)
        _sync()
        self.seconds.append(time.perf_counter() - start)
        return stats


def ppo_minibatch(cfg: Config, repeats: int) -> tuple[list[tuple[str, str]], Any]:
    """Seconds per PPO minibatch update: an on-policy rollout of ``ppo.n_steps``, then minibatches."""
    from sac_glam.run.evaluation import sample_actions
    from sac_glam.run.factory import make_backend, make_learner

    backend = make_backend(cfg)
    learner: Any = make_learner(cfg, np.random.default_rng(0))
    envs = PlaygroundTextVecEnv(cfg.env, split="train", seed=0)
    obs, rng, steps = envs.reset(), np.random.default_rng(0), 0
    while not learner.ready(steps):
        act = backend.act(obs.prompts, obs.actions, value=True)
        ids = sample_actions(act, rng)
        step = envs.step(ids)
        learner.record(obs, act, ids, step)
        obs, steps = step.obs, steps + envs.n_envs
    timed = _TimedUpdates(backend)
    learner.cfg.epochs = repeats + 1  # one minibatch per epoch (ppo.batch_size = ppo.n_steps)
    _reset_gpu_peak()
    learner.update(timed, obs, steps)  # the first minibatch is the warm-up
    times = timed.seconds
    s = statistics.median(times[1:])
    rows = [(f"PPO minibatch, {cfg.ppo.batch_size} transitions", f"{s:.3f} s (min {min(times[1:]):.3f})")]
    if torch.cuda.is_available():
        rows.append(("  peak GPU memory", _gpu_peak()))
    return rows, backend


def lamorel_llm(cfg: Config, directory: Path) -> Any:
    """Lamorel's server-side model (``HF_LLM``) on ``directory``, in this process, or None."""
    if importlib.util.find_spec("lamorel") is None:
        return None
    from types import SimpleNamespace

    from lamorel.server.llms.hf_llm import HF_LLM
    from lamorel.server.llms.module_functions.score_module_function import LogScoringModuleFn
    from transformers import AutoConfig

    family = "seq2seq" if AutoConfig.from_pretrained(str(directory)).is_encoder_decoder else "causal"
    parallelism = SimpleNamespace(synchronize_gpus_after_scoring=False, empty_cuda_cache_after_scoring=False)
    args = SimpleNamespace(model_type=family, model_path=str(directory), pretrained=True, seed=0,
                           minibatch_size=cfg.model.minibatch_size, pre_encode_inputs=True,
                           load_in_4bit=False, parallelism=parallelism)  # fmt: skip
    use_cpu = not torch.cuda.is_available()
    llm = HF_LLM(args, [0], use_cpu)
    score = LogScoringModuleFn(llm.pad_token, family, True)
    score.device, score.llm_config = llm.device, llm.get_model_config()
    llm.register_module_functions({"__score": score})
    return llm


def acting(backend: Any, cfg: Config, directory: Path, repeats: int) -> list[tuple[str, str]]:
    """The 32-env acting step, and (when importable) Lamorel's scorer beside ours, interleaved."""
    obs = states(cfg, 4)
    prompts, actions = list(obs.prompts), [list(a) for a in obs.actions]
    pairs = sum(map(len, actions))
    llm = lamorel_llm(cfg, directory)
    calls: dict[str, Callable[[], Any]] = {"act": lambda: backend.act(prompts, actions)}
    if llm is not None:
        tok, net = llm._LLM_tokenizer, llm._LLM_model
        special = tok.decode(tok("", add_special_tokens=True)["input_ids"])  # T5: "</s>"; GPT-2: ""
        contexts = [p + special for p in prompts]

        def ours() -> torch.Tensor:
            with torch.no_grad():
                out = forward_actions(net, tok, prompts, actions, minibatch_size=cfg.model.minibatch_size)
            return out.logp_BA[out.mask_BA]

        def theirs() -> list[dict[str, torch.Tensor]]:
            result: list[dict[str, torch.Tensor]] = llm.forward(["__score"], contexts, actions)
            return result

        calls |= {"ours": ours, "lamorel": theirs}
    times: dict[str, list[float]] = {k: [] for k in calls}
    for fn in calls.values():
        fn()  # warm-up
    _reset_gpu_peak()
    for r in range(repeats):
        for name in list(calls)[:: 1 if r % 2 == 0 else -1]:  # interleaved, alternating order
            times[name].append(_timed(calls[name]))
    act_s = statistics.median(times["act"])
    rows = [
        (f"acting step, {len(prompts)} envs ({pairs} pairs)", f"{act_s:.3f} s (min {min(times['act']):.3f})"),
        ("  per scored (prompt, action) pair", f"{act_s / pairs * 1e6:.0f} us, {pairs / act_s:,.0f} pairs/s"),
    ]
    if torch.cuda.is_available():
        rows.append(("  peak GPU memory", _gpu_peak()))
    if llm is None:
        return [*rows, ("Lamorel scorer", "skipped: lamorel is not importable in this environment")]
    ours_s, theirs_s = statistics.median(times["ours"]), statistics.median(times["lamorel"])
    ref = torch.cat([d["__score"] for d in calls["lamorel"]()])
    mine = calls["ours"]()
    return [
        *rows,
        ("scorer on Lamorel's fp32 model, ours", f"{ours_s:.3f} s ({ours_s / pairs * 1e6:.0f} us/pair)"),
        ("  Lamorel HF_LLM.forward('__score')", f"{theirs_s:.3f} s ({theirs_s / pairs * 1e6:.0f} us/pair)"),
        ("  ours / Lamorel (scorer; acting step)", f"{ours_s / theirs_s:.2f}x; {act_s / theirs_s:.2f}x"),
        ("  max |score ours - Lamorel|", f"{(mine.cpu() - ref.cpu()).abs().max().item():.1e}"),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="sac-glam bench paper", description=plain(__doc__.split("\n\n")[0]))
    parser.add_argument("--arch", default="flan-t5-base", choices=["flan-t5-base", "t5-small", "gpt2"])
    parser.add_argument("--model-dir", type=Path, help="a make-model (or downloaded) directory to use")
    parser.add_argument("--tiny", action="store_true", help="make-model --tiny dimensions (CI)")
    parser.add_argument("--batch", type=int, default=256, help="SAC batch and PPO minibatch (paper: 256)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats of each measurement")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["sac", "ppo", "act"], help="parts to skip")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of both paper configs")
    args = parser.parse_args(argv)
    if args.batch < 1 or args.repeats < 1:
        parser.error(f"--batch and --repeats must be >= 1, got {args.batch} and {args.repeats}")
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        print_rows(run(args))
    finally:
        torch.set_num_threads(threads)


def run(args: argparse.Namespace) -> list[tuple[str, str]]:
    directory = model_dir(args.arch, args.model_dir, args.tiny)
    sac_cfg = paper_config("sac_glam", directory, args.batch, args.overrides)
    ppo_cfg = paper_config("ppo_glam", directory, args.batch, args.overrides)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    m = sac_cfg.model
    rows = [
        ("model", f"{directory} (lora={m.lora}, 4-bit={m.load_in_4bit}, {m.normalization})"),
        ("device, threads", f"{device}, {torch.get_num_threads()}"),
    ]
    backend = None
    if "sac" not in args.skip:
        part, backend = sac_step(sac_cfg, args.repeats)
        rows += part
    if "ppo" not in args.skip:
        backend = None
        gc.collect()
        part, backend = ppo_minibatch(ppo_cfg, args.repeats)
        rows += part
    if backend is None and "act" not in args.skip:
        from sac_glam.run.factory import make_backend

        backend = make_backend(sac_cfg)
    rows.append(("peak RSS (before Lamorel's model)", f"{_rss_gib():.2f} GiB"))
    if backend is not None and "act" not in args.skip:
        rows += acting(backend, sac_cfg, directory, args.repeats)
    return rows


if __name__ == "__main__":
    main()
