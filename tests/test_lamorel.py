"""The Lamorel backend: the install message and the launcher command always; parity with the local
backend when lamorel is importable (CI has no lamorel: those tests skip).

The parity tests start real Lamorel processes (1 RL + 1 server, or 2 RL + 2 servers) on this machine
with the same environment variables Lamorel's launcher sets, run the same calls as a LocalBackend in
the test process, and compare: action log-probs, trainable parameters after 3 updates, checkpoints.
"""

from __future__ import annotations

import functools
import importlib
import json
import multiprocessing as mp
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any

import pytest
import torch
from lamorel_procs import grad_steps, kill_lingering, pids_with_env

from sac_glam.buffers.replay import SACBatch
from sac_glam.buffers.rollout import PPOBatch
from sac_glam.config import Config, ConfigError, from_raw, to_dict
from sac_glam.run.configs import load_config

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PROMPTS = [
    "Goal: Grow green mouse\nYou see: green water, green mouse, blue rose\nYou are on: nothing\n"
    "You are holding: nothing\nYou have grown: nothing\nAction:",
    "Goal: Grasp red cat\nYou see: red cat\nYou are on: nothing\nYou are holding: nothing\n"
    "You have grown: nothing\nAction:",
    "Goal: Grasp any animal\nYou see: blue door, red cat, green tree\nYou are on: red cat\n"
    "You are holding: green water\nYou have grown: green tree, red cat\nAction:",
]
ACTIONS = [
    ["Go to green water", "Go to green mouse", "Go to blue rose", "Grasp", "Release"],
    ["Grasp", "Go to red cat"],
    ["Release", "Go to blue door", "Grasp", "Go to green tree"],
]
# Small and odd on purpose: 9 rows over 2 servers are 5 + 4 rows, i.e. 2 and 1 chunks of 4 rows,
# so the servers run different numbers of backward passes.
# tiny-t5 (the CPU presets' tiny-causal is covered end to end by the README's lamorel_cpu run): the module
# functions are exact for T5 only, and the parity tests were measured on it.
SMALL = ["model.name=tiny-t5", "model.tiny.n_heads=4", "model.tiny.d_model=32", "model.tiny.pretrain_steps=0", "model.tiny.d_ff=64",
         "critic.width=32", "sac.chunk_size=4", "ppo.chunk_size=4",
         "train.seed=3", "train.progress=false", "train.tensorboard=false",
         # Learning rates large enough that 3 Adam steps move weights far more than the tolerance.
         "sac.actor_lr=0.01", "sac.critic_lr=0.01", "ppo.lr=0.01"]  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# Always run (no lamorel needed)
# ---------------------------------------------------------------------------------------------------


PACKAGE = "sac_glam.backends.lamorel"


def _package_modules() -> dict[str, Any]:
    """``sac_glam.backends.lamorel`` and its submodules as imported now (absent ones: None)."""
    names = [PACKAGE, *(f"{PACKAGE}.{m}" for m in ("client", "module_functions", "process", "server"))]
    return {name: sys.modules.get(name) for name in ["lamorel", *names]}


def _without_lamorel(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import lamorel`` fail, installed or not, and drop the package's modules already imported."""
    for name in _package_modules():
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setitem(sys.modules, "lamorel", None)


def test_lamorel_backend_without_lamorel_says_how_to_install(monkeypatch):
    from sac_glam.run.factory import make_backend

    _without_lamorel(monkeypatch)
    with pytest.raises(ConfigError, match=r"pip install 'sac-glam\[lamorel\]'"):
        make_backend(load_config("lamorel_cpu"))


def test_launch_builds_the_lamorel_launcher_command(tmp_path):
    from sac_glam.cli.launch import lamorel_command, rl_script_path
    from sac_glam.config import config_dir

    overrides = ["train.total_steps=640", "+sac.batch_size=64"]
    cfg = load_config("lamorel_cpu", overrides)
    script = rl_script_path()
    assert script.is_absolute() and script.name == "lamorel_rl_script.py" and script.is_file()
    cmd = lamorel_command(cfg, "lamorel_cpu", config_dir(), overrides, script, python="python")
    assert cmd[:3] == ["python", "-m", "sac_glam.cli.lamorel_watch"]
    path = cmd[cmd.index("--config-path") + 1]
    assert Path(path).is_absolute() and (Path(path) / "lamorel_cpu.yaml").is_file()
    assert cmd[cmd.index("--config-name") + 1] == "lamorel_cpu"
    assert f"++rl_script_args.path={script}" in cmd
    assert "++train.total_steps=640" in cmd and "++sac.batch_size=64" in cmd
    run_dirs = [c for c in cmd if c.startswith("++train.run_dir=")]
    assert len(run_dirs) == 1 and Path(run_dirs[0].split("=", 1)[1]).is_absolute()
    # A user's run_dir is kept (absolute), not duplicated.
    user = ["train.run_dir=runs/x"]
    cmd = lamorel_command(
        load_config("lamorel_cpu", user), "lamorel_cpu", config_dir(), user, script, python="python"
    )
    assert [c for c in cmd if "train.run_dir" in c] == [
        f"++train.run_dir={(Path.cwd() / 'runs/x').resolve()}"
    ]


def test_launch_without_lamorel_reports_the_install_message(monkeypatch, capsys):
    import importlib.util

    from sac_glam.cli import launch

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name.startswith("lamorel") else real(name, *a)
    )
    _without_lamorel(monkeypatch)
    assert launch.main(["--config-name", "lamorel_cpu"]) == 2
    assert "pip install 'sac-glam[lamorel]'" in capsys.readouterr().err


@pytest.mark.parametrize("name", [n for n in ("lamorel_cpu", "lamorel_ppo_cpu", "sac_glam_her_lamorel",
                                               "sac_glam_her_lamorel_multinode")])  # fmt: skip
def test_lamorel_configs_have_every_key_lamorel_reads(name):
    cfg = load_config(name)
    assert cfg.train.backend == "lamorel"
    lam = cfg.lamorel_args
    required = ["log_level", "gloo_timeout", "allow_subgraph_use_whith_gradient",
                "distributed_setup_args.n_rl_processes", "distributed_setup_args.n_llm_processes",
                "accelerate_args.config_file", "accelerate_args.machine_rank", "accelerate_args.num_machines",
                "llm_args.model_type", "llm_args.model_path", "llm_args.pretrained", "llm_args.minibatch_size",
                "llm_args.pre_encode_inputs", "llm_args.load_in_4bit", "llm_args.seed",
                "llm_args.parallelism.use_gpu", "llm_args.parallelism.model_parallelism_size",
                "llm_args.parallelism.synchronize_gpus_after_scoring",
                "llm_args.parallelism.empty_cuda_cache_after_scoring"]  # fmt: skip
    for key in required:
        node: Any = lam
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"{name}: lamorel_args.{key} missing"
            node = node[part]
    setup = lam["distributed_setup_args"]
    # n_rl < n_llm hits the dispatcher bug of Lamorel's main branch (docs/lamorel_facts.md).
    assert setup["n_rl_processes"] >= setup["n_llm_processes"]
    accel = Path(__file__).resolve().parents[1] / "lamorel_configs" / lam["accelerate_args"]["config_file"]
    assert accel.is_file()


def test_paper_layout_is_four_servers_with_lora_and_4bit():
    cfg = load_config("sac_glam_her_lamorel")
    assert cfg.lamorel_args["distributed_setup_args"] == {"n_rl_processes": 4, "n_llm_processes": 4}
    assert cfg.lamorel_args["llm_args"]["parallelism"]["use_gpu"]
    assert cfg.model.name == "google/flan-t5-base" and cfg.model.lora and cfg.model.load_in_4bit
    assert cfg.buffer.her and cfg.env.n_envs == 32
    multi = load_config("sac_glam_her_lamorel_multinode")
    assert multi.lamorel_args["accelerate_args"]["num_machines"] == 2


# A stand-in for Lamorel's launcher and its RL rank 0, speaking the same files: it handles SIGUSR1 (or
# the signal named by argv[2]) only after announcing its pid (as rank 0 does once train() has its
# handlers), then "checkpoints" (writes the marker) and exits with accelerate's 1.
FAKE_LAUNCHER = """
import os, signal, socket, sys, time
from pathlib import Path
run_dir = Path(sys.argv[1])
assert signal.getsignal(signal.SIGUSR1) == signal.SIG_IGN and signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
def stop(signum, frame):
    (run_dir / ".preempted").write_text("x")
    sys.exit(1)
time.sleep(0.5)  # a signal sent now is held by lamorel-launch until the pid file exists
signal.signal(getattr(signal, sys.argv[2]) if len(sys.argv) > 2 else signal.SIGUSR1, stop)
(run_dir / ".lamorel_rl0.pid").write_text(f"{socket.gethostname()} {os.getpid()}")
time.sleep(60)
sys.exit(3)
"""


def test_launcher_exit_code_maps_the_preemption_marker(tmp_path):
    from sac_glam.cli.launch import PREEMPTED_MARKER, launcher_exit_code
    from sac_glam.run.train import EXIT_PREEMPTED

    assert launcher_exit_code(0, tmp_path) == 0
    assert launcher_exit_code(1, tmp_path) == 1
    assert launcher_exit_code(-signal.SIGKILL, tmp_path) == 128 + signal.SIGKILL
    marker = tmp_path / PREEMPTED_MARKER
    marker.write_text("1234\n")
    # accelerate reports rank 0's 75 as 1: the marker says it was a preemption, and is consumed.
    assert launcher_exit_code(1, tmp_path) == EXIT_PREEMPTED == 75
    assert not marker.exists()
    assert launcher_exit_code(1, tmp_path) == 1


def test_rl_rank0_pid_is_read_only_on_its_host(tmp_path):
    from sac_glam.cli.launch import RL_PID_FILE, rl_rank0_pid

    assert rl_rank0_pid(tmp_path) is None
    (tmp_path / RL_PID_FILE).write_text(f"{socket.gethostname()} 4242\n")
    assert rl_rank0_pid(tmp_path) == 4242
    (tmp_path / RL_PID_FILE).write_text("some-other-node 4242\n")  # multi-node: not ours to signal
    assert rl_rank0_pid(tmp_path) is None
    (tmp_path / RL_PID_FILE).write_text("garbage")
    assert rl_rank0_pid(tmp_path) is None


def test_run_launcher_forwards_sigusr1_to_rank0_and_exits_75(tmp_path):
    from sac_glam.cli.launch import RL_PID_FILE, run_launcher

    before = signal.getsignal(signal.SIGUSR1)
    # Sent to this process while the fake rank 0 still ignores the signal: it must be held, not lost.
    timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGUSR1))
    timer.start()
    start = time.monotonic()
    try:
        code = run_launcher([sys.executable, "-c", FAKE_LAUNCHER, str(tmp_path)], tmp_path, poll_s=0.05)
    finally:
        timer.cancel()
    assert code == 75
    assert time.monotonic() - start < 30
    assert not (tmp_path / ".preempted").exists() and not (tmp_path / RL_PID_FILE).exists()
    assert signal.getsignal(signal.SIGUSR1) == before


def test_run_launcher_turns_a_first_ctrl_c_into_a_checkpoint_of_rank0_and_a_second_into_a_stop(tmp_path):
    from sac_glam.cli.launch import run_launcher

    before = signal.getsignal(signal.SIGINT)
    # One Ctrl-C: rank 0 gets SIGTERM (it checkpoints), held until its pid file exists: exit 75.
    timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        cmd = [sys.executable, "-c", FAKE_LAUNCHER, str(tmp_path), "SIGTERM"]
        assert run_launcher(cmd, tmp_path, poll_s=0.05) == 75
    finally:
        timer.cancel()
    # Two Ctrl-C before rank 0 handles signals: the second stops the launcher at once (128 + SIGINT).
    timers = [threading.Timer(t, os.kill, (os.getpid(), signal.SIGINT)) for t in (0.1, 0.25)]
    for t in timers:
        t.start()
    try:
        assert run_launcher(cmd, tmp_path, poll_s=0.05) == 130
    finally:
        for t in timers:
            t.cancel()
    assert signal.getsignal(signal.SIGINT) == before


# ---------------------------------------------------------------------------------------------------
# Module functions on a Lamorel-layout minibatch (no lamorel needed: a stub stands in for it in CI)
# ---------------------------------------------------------------------------------------------------


@pytest.fixture
def lamorel_backend() -> Any:
    """``sac_glam.backends.lamorel``; without lamorel, imported against a stub of the names it uses
    (and every module of the package dropped afterwards, so that no later import finds the stub's)."""
    try:
        import lamorel  # noqa: F401

        import sac_glam.backends.lamorel as real

        yield real
        return
    except ImportError:
        pass
    import sac_glam.backends as package

    saved = _package_modules()
    saved_attr = package.__dict__.get("lamorel")
    stub = types.ModuleType("lamorel")

    class BaseModuleFunction(torch.nn.Module):
        def initialize(self) -> None:
            raise NotImplementedError

    stub.BaseModuleFunction = BaseModuleFunction  # type: ignore[attr-defined]
    stub.BaseUpdater = type("BaseUpdater", (), {})  # type: ignore[attr-defined]
    stub.BaseModelInitializer = type("BaseModelInitializer", (), {})  # type: ignore[attr-defined]
    stub.Caller = object  # type: ignore[attr-defined]
    stub.lamorel_init = lambda: None  # type: ignore[attr-defined]
    for name in saved:
        sys.modules.pop(name, None)
    sys.modules["lamorel"] = stub
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
        if saved_attr is None:
            package.__dict__.pop("lamorel", None)
        else:
            package.lamorel = saved_attr


@pytest.fixture
def pad_first_tokenizer(monkeypatch):
    """Tiny presets built with ``build_word_tokenizer(..., specials_first=True)`` (pad = start = 0)."""
    import sac_glam.llm.models as models
    from sac_glam.llm.tokenizer import build_word_tokenizer

    monkeypatch.setattr(
        models, "build_word_tokenizer", functools.partial(build_word_tokenizer, specials_first=True)
    )


def _lamorel_minibatch(tokenizer: Any, contexts: list[str], candidates: list[list[str]]) -> tuple[dict, list]:
    """Lamorel's seq2seq minibatch without pre-encoding (``HF_LLM.forward`` on main): contexts tokenized
    without special tokens and right-padded with 0, decoder rows ``[0] + candidate`` right-padded with 0,
    one padded-context dict object repeated per candidate (its ``tokenized_contexts``)."""
    tokenized = [dict(tokenizer(c, return_token_type_ids=False, add_special_tokens=False)) for c in contexts]
    width = max(len(t["input_ids"]) for t in tokenized)
    padded = [{"input_ids": t["input_ids"] + [0] * (width - len(t["input_ids"])),
               "attention_mask": t["attention_mask"] + [0] * (width - len(t["input_ids"]))}
              for t in tokenized]  # fmt: skip
    rows, outputs = [], []
    for ctx, cands in zip(padded, candidates, strict=True):
        for cand in cands:
            rows.append(ctx)
            outputs.append(tokenizer(cand, add_special_tokens=False)["input_ids"])
    length = max(len(o) for o in outputs)
    minibatch = {
        "input_ids": torch.tensor([r["input_ids"] for r in rows]),
        "attention_mask": torch.tensor([r["attention_mask"] for r in rows]),
        "decoder_input_ids": torch.tensor([[0, *o] + [0] * (length - len(o)) for o in outputs]),
        "decoder_attention_mask": torch.tensor(
            [[1] * (1 + len(o)) + [0] * (length - len(o)) for o in outputs]
        ),
        "output_hidden_states": True,
    }
    return minibatch, rows


def _bound_functions(module: Any, agent: Any) -> dict[str, Any]:
    fns = module.make_module_functions()
    for fn in fns.values():
        fn.initialize()
        fn.bind(agent)
    return fns


def test_whole_prompt_groups_keep_prompts_whole(lamorel_backend):
    groups = lamorel_backend.whole_prompt_groups
    assert groups([5, 2, 4], 6) == [slice(0, 1), slice(1, 3)]
    assert groups([7, 1], 6) == [slice(0, 1), slice(1, 2)]
    assert groups([3, 3, 3], 6) == [slice(0, 2), slice(2, 3)]
    assert groups([1, 1, 1], 100) == [slice(0, 3)]
    assert groups([], 4) == []


def test_word_tokenizer_specials_first_puts_pad_at_zero():
    from sac_glam.envs.goals import vocabulary
    from sac_glam.llm.tokenizer import build_word_tokenizer

    words = vocabulary()
    default, first = build_word_tokenizer(words), build_word_tokenizer(words, specials_first=True)
    assert default.pad_token_id == len(words) and default.convert_ids_to_tokens(0) == words[0]
    assert (first.pad_token_id, first.eos_token_id, first.unk_token_id) == (0, 1, 2)
    assert first.convert_ids_to_tokens(3) == words[0] and len(first) == len(default)
    text = "Go to red cat"
    assert first.decode(first(text)["input_ids"]) == default.decode(default(text)["input_ids"]) == text


@pytest.mark.parametrize("extra", [
    ["model.normalization=constrained"],
    ["model.normalization=sum"],
    ["model.normalization=mean", "critic.input=prompt"],
])  # fmt: skip
def test_module_functions_match_the_agent_on_lamorels_minibatch(extra, lamorel_backend, pad_first_tokenizer):
    """log pi, Q and V from a forward laid out as Lamorel's equal the agent's own evaluate (1e-5)."""
    from sac_glam.run.factory import make_agent

    cfg = load_config("lamorel_ppo_cpu", [*SMALL, "critic.share_llm=true", *extra])
    agent = make_agent(cfg)
    assert agent.tokenizer.pad_token_id == 0 and agent.llm.config.decoder_start_token_id == 0
    fns = _bound_functions(lamorel_backend, agent)
    minibatch, contexts = _lamorel_minibatch(agent.tokenizer, PROMPTS, ACTIONS)
    with torch.no_grad():
        outputs = agent.llm(**minibatch)
        ref = agent.evaluate(PROMPTS, ACTIONS, q=True, v=True)
        log_pi = fns["log_pi"](outputs, minibatch=minibatch, tokenized_contexts=contexts, actions=ACTIONS)
        q = fns["q"](outputs, minibatch=minibatch, tokenized_contexts=contexts, actions=ACTIONS)
        v = fns["value"](outputs, minibatch=minibatch, tokenized_contexts=contexts, actions=ACTIONS)
    assert ref.q_KBA is not None and ref.v_B is not None
    n_rows = sum(len(a) for a in ACTIONS)
    assert log_pi.shape == (n_rows,) and q.shape == (n_rows, cfg.critic.n_critics) and v.shape == (n_rows,)
    rows = [(b, a) for b, acts in enumerate(ACTIONS) for a in range(len(acts))]
    ref_log_pi = torch.stack([ref.log_pi_BA[b, a] for b, a in rows])
    ref_q = torch.stack([ref.q_KBA[:, b, a] for b, a in rows])
    ref_v = torch.stack([ref.v_B[b] for b, _ in rows])
    assert float((log_pi - ref_log_pi).abs().max()) < 1e-5
    assert float((q - ref_q).abs().max()) < 1e-5
    assert float((v - ref_v).abs().max()) < 1e-5
    # Not a comparison of constants: the policy and the heads vary across rows.
    assert float(ref_log_pi.std()) > 1e-3 and float(ref_q.std()) > 1e-4


def test_module_functions_refuse_what_they_cannot_compute_exactly(lamorel_backend, pad_first_tokenizer):
    from sac_glam.run.factory import make_agent

    mod = lamorel_backend
    agent = make_agent(load_config("lamorel_ppo_cpu", [*SMALL, "critic.share_llm=true"]))
    fns = _bound_functions(mod, agent)
    minibatch, contexts = _lamorel_minibatch(agent.tokenizer, PROMPTS, ACTIONS)
    with torch.no_grad():
        outputs = agent.llm(**minibatch)
        with pytest.raises(ValueError, match="needs actions="):
            fns["log_pi"](outputs, minibatch=minibatch, tokenized_contexts=contexts)
        # A call split over Lamorel minibatches: the first minibatch holds 4 of its 11 rows.
        part = {k: v[:4] if isinstance(v, torch.Tensor) else v for k, v in minibatch.items()}
        with pytest.raises(ValueError, match="minibatch_size >="):
            fns["log_pi"](agent.llm(**part), minibatch=part, tokenized_contexts=contexts[:4], actions=ACTIONS)
        # ... but Q (action input) and V are per row, so any minibatch size works.
        assert fns["q"](agent.llm(**part), minibatch=part, tokenized_contexts=contexts[:4]).shape[0] == 4
        wrong = [ACTIONS[0], ACTIONS[2], ACTIONS[1]]
        with pytest.raises(ValueError, match="candidates per context"):
            fns["log_pi"](outputs, minibatch=minibatch, tokenized_contexts=contexts, actions=wrong)

    # A model whose decoder does not start at Lamorel's 0 (the default word tokenizer: 0 is a word), a
    # separate critic LLM, no value head: refused with the reason, before any forward in module_outputs.
    import sac_glam.llm.models as models
    from sac_glam.llm.tokenizer import build_word_tokenizer

    with pytest.MonkeyPatch.context() as mp_:
        mp_.setattr(models, "build_word_tokenizer", build_word_tokenizer)
        default = make_agent(load_config("lamorel_cpu", SMALL))
    problems = mod.module_function_problems(default, list(mod.MODULE_FUNCTION_KEYS))
    text = " | ".join(problems)
    assert (
        "decoder_start_token_id is" in text and "critic.share_llm=false" in text and "no value head" in text
    )
    fns = _bound_functions(mod, default)
    minibatch, contexts = _lamorel_minibatch(default.tokenizer, PROMPTS, ACTIONS)
    with torch.no_grad(), pytest.raises(ValueError, match="decoder_start_token_id"):
        fns["log_pi"](
            default.llm(**minibatch), minibatch=minibatch, tokenized_contexts=contexts, actions=ACTIONS
        )
    causal = make_agent(load_config("lamorel_cpu", [*SMALL, "model.name=tiny-causal"]))
    assert any(
        "causal models are not supported" in p for p in mod.module_function_problems(causal, ["log_pi"])
    )


def test_module_functions_check_the_special_tokens_lamorel_leaves_out(lamorel_backend, pad_first_tokenizer):
    """T5 appends </s> to encoder inputs and Lamorel tokenizes contexts without it: the functions refuse
    a context without it, and the text module_outputs appends restores it."""
    from tokenizers.processors import TemplateProcessing

    from sac_glam.run.factory import make_agent

    mod = lamorel_backend
    agent = make_agent(load_config("lamorel_ppo_cpu", [*SMALL, "critic.share_llm=true"]))
    tok = agent.tokenizer
    assert mod.special_affixes(tok) == ((), ()) and mod.affix_texts(tok) == ("", "")
    tok.backend_tokenizer.post_processor = TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", tok.eos_token_id)]
    )
    assert mod.special_affixes(tok) == ((), (tok.eos_token_id,)) and mod.affix_texts(tok) == ("", "</s>")
    fns = _bound_functions(mod, agent)
    minibatch, contexts = _lamorel_minibatch(tok, PROMPTS, ACTIONS)
    with torch.no_grad(), pytest.raises(ValueError, match="lacks the special tokens"):
        fns["value"](agent.llm(**minibatch), minibatch=minibatch, tokenized_contexts=contexts)
    minibatch, contexts = _lamorel_minibatch(tok, [p + "</s>" for p in PROMPTS], ACTIONS)
    with torch.no_grad():
        v = fns["value"](agent.llm(**minibatch), minibatch=minibatch, tokenized_contexts=contexts)
        ref = agent.evaluate(PROMPTS, ACTIONS, v=True).v_B
    assert ref is not None
    assert (
        float((v - torch.stack([ref[b] for b, acts in enumerate(ACTIONS) for _ in acts])).abs().max()) < 1e-5
    )


# ---------------------------------------------------------------------------------------------------
# Parity with the local backend (needs lamorel)
# ---------------------------------------------------------------------------------------------------


def _sac_batches(n: int, rows: int = 9) -> list[SACBatch]:
    g = torch.Generator().manual_seed(7)
    out = []
    for k in range(n):
        idx = [(k + i) % 3 for i in range(rows)]
        nxt = [(k + i + 1) % 3 for i in range(rows)]
        out.append(SACBatch(
            prompts=[PROMPTS[i] for i in idx], actions=[ACTIONS[i] for i in idx],
            action_ids=torch.tensor([int(torch.randint(len(ACTIONS[i]), (1,), generator=g)) for i in idx]),
            returns=torch.rand(rows, generator=g), next_prompts=[PROMPTS[i] for i in nxt],
            next_actions=[ACTIONS[i] for i in nxt],
            discounts=torch.where(torch.rand(rows, generator=g) < 0.3, 0.0, 0.99 ** 3),
            is_her=torch.zeros(rows, dtype=torch.bool), goal_types=["grasp"] * rows,
            returns_to_go=torch.rand(rows, generator=g),
        ))  # fmt: skip
    return out


def _ppo_batches(n: int, rows: int = 9) -> list[PPOBatch]:
    g = torch.Generator().manual_seed(8)
    out = []
    for k in range(n):
        idx = [(k + i) % 3 for i in range(rows)]
        out.append(PPOBatch(
            prompts=[PROMPTS[i] for i in idx], actions=[ACTIONS[i] for i in idx],
            action_ids=torch.tensor([int(torch.randint(len(ACTIONS[i]), (1,), generator=g)) for i in idx]),
            old_log_probs=-torch.rand(rows, generator=g) - 0.5, old_values=torch.randn(rows, generator=g),
            advantages=torch.randn(rows, generator=g), returns=torch.randn(rows, generator=g),
        ))  # fmt: skip
    return out


def _batches(cfg: Config, n: int) -> list[Any]:
    return _sac_batches(n) if cfg.train.algo == "sac" else _ppo_batches(n)


def _lamorel_worker(rank: int, world: int, port: int, raw: dict[str, Any], out: str, n_updates: int) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1",
                      HF_HUB_OFFLINE="1", USE_CPU="True")  # fmt: skip
    from sac_glam.backends.lamorel import run_process

    cfg = from_raw(raw)

    def rl_main(backend: Any) -> None:
        act = backend.act(PROMPTS, ACTIONS, value=cfg.train.algo == "ppo")
        stats = [backend.update(b) for b in _batches(cfg, n_updates)]
        result = {
            "act": act,
            "stats": stats,
            "servers": backend.server_states(),
            "state": backend.state_dict(),
        }
        # Checkpoint round trip: load a perturbed state, read it back, restore.
        perturbed = {"agent": {k: {n: t + 1.0 for n, t in v.items()} for k, v in result["state"]["agent"].items()},
                     "updater": result["state"]["updater"]}  # fmt: skip
        backend.load_state_dict(perturbed)
        result["perturbed"] = backend.server_states()
        backend.load_state_dict(result["state"])
        result["act_after"] = backend.act(PROMPTS, ACTIONS)
        torch.save(result, out)

    run_process(cfg, rl_main)


def _spawn_world(target: Any, world: int, cfg: Config, out: str, *extra: Any) -> None:
    """Run ``target(rank, world, port, cfg, out, *extra)`` in ``world`` spawned processes; all must exit 0."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(target=target, args=(r, world, port, to_dict(cfg), out, *extra)) for r in range(world)
    ]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join(timeout=600)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]


def _run_lamorel(cfg: Config, tmp_path: Path, n_updates: int) -> dict[str, Any]:
    setup = cfg.lamorel_args["distributed_setup_args"]
    world = setup["n_rl_processes"] + setup["n_llm_processes"]
    out = str(tmp_path / "lamorel_result.pt")
    _spawn_world(_lamorel_worker, world, cfg, out, n_updates)
    result: dict[str, Any] = torch.load(out, weights_only=False)
    return result


def _run_local(cfg: Config, n_updates: int) -> dict[str, Any]:
    from sac_glam.backends.local import LocalBackend
    from sac_glam.run.factory import make_agent, make_updater

    agent = make_agent(cfg)
    backend = LocalBackend(agent, make_updater(cfg, agent))
    act = backend.act(PROMPTS, ACTIONS, value=cfg.train.algo == "ppo")
    stats = [backend.update(b) for b in _batches(cfg, n_updates)]
    return {
        "act": act,
        "stats": stats,
        "state": backend.state_dict(),
        "act_after": backend.act(PROMPTS, ACTIONS),
    }


def _max_diff(a: dict[str, Any], b: dict[str, Any]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def _flat(agent_state: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {f"{g}.{k}": v for g, part in agent_state.items() for k, v in part.items()}


def _lamorel_cfg(algo: str, servers: int, extra: list[str]) -> Config:
    torch.set_num_threads(1)
    name = "lamorel_cpu" if algo == "sac" else "lamorel_ppo_cpu"
    layout = [f"lamorel_args.distributed_setup_args.n_rl_processes={servers}",
              f"lamorel_args.distributed_setup_args.n_llm_processes={servers}"]  # fmt: skip
    return load_config(name, [*SMALL, *layout, *extra])


@pytest.mark.lamorel
@pytest.mark.parametrize("algo,servers,extra", [
    ("sac", 1, ["sac.max_grad_norm=0.5"]),
    ("sac", 2, []),
    ("ppo", 2, []),
])  # fmt: skip
def test_lamorel_matches_local_backend(algo, servers, extra, tmp_path):
    pytest.importorskip("lamorel")
    cfg = _lamorel_cfg(algo, servers, extra)
    n_updates = 3
    lam = _run_lamorel(cfg, tmp_path, n_updates)
    ref = _run_local(cfg, n_updates)

    # Acting: the same log pi (and V), whatever the sharding over servers.
    assert torch.equal(lam["act"].mask_BA, ref["act"].mask_BA)
    d_act = float((lam["act"].log_pi_BA - ref["act"].log_pi_BA).abs().max())
    assert d_act < 1e-5, d_act
    if algo == "ppo":
        assert float((lam["act"].value_B - ref["act"].value_B).abs().max()) < 1e-5

    # Training: every server holds the parameters of 3 full-batch updates of the local backend.
    servers_flat = [_flat(s["agent"]) for s in lam["servers"]]
    assert len(servers_flat) == servers
    ref_flat = _flat(ref["state"]["agent"])
    d_params = max(_max_diff(s, ref_flat) for s in servers_flat)
    assert d_params < 1e-4, d_params
    for other in servers_flat[1:]:
        assert _max_diff(other, servers_flat[0]) < 1e-6
    # ... and the parameters moved (the comparison is not between two untouched models).
    init = _flat(_run_local(cfg, 0)["state"]["agent"])
    moved = _max_diff(ref_flat, init)
    assert moved > 1e-2, moved
    print(
        f"{algo}, {servers} server(s): |log pi - local| {d_act:.2e}, |params - local| {d_params:.2e}, moved {moved:.2e}"
    )
    for a, b in zip(lam["stats"], ref["stats"], strict=True):
        for k in ("train/critic_loss", "train/actor_loss", "train/entropy"):
            if k in b and b[k] == b[k]:
                assert abs(a[k] - b[k]) < 1e-4, (k, a[k], b[k])

    # Checkpoints: RL rank 0's state_dict is a server's state; loading reaches every server.
    assert _max_diff(_flat(lam["state"]["agent"]), servers_flat[0]) == 0.0
    assert lam["state"]["updater"].keys() == ref["state"]["updater"].keys()
    for s in lam["perturbed"]:
        assert _max_diff(_flat(s["agent"]), {k: v + 1.0 for k, v in servers_flat[0].items()}) < 1e-6
    # After the perturbed state, restoring the checkpoint gives the trained policy back.
    assert float((lam["act_after"].log_pi_BA - ref["act_after"].log_pi_BA).abs().max()) < 1e-5


# ---------------------------------------------------------------------------------------------------
# Module functions through real Lamorel (needs lamorel)
# ---------------------------------------------------------------------------------------------------


def _modfn_worker(rank: int, world: int, port: int, raw: dict[str, Any], out: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1",
                      HF_HUB_OFFLINE="1", USE_CPU="True")  # fmt: skip
    import sac_glam.llm.models as models
    from sac_glam.backends.lamorel import MODULE_FUNCTION_KEYS, run_process
    from sac_glam.llm.tokenizer import build_word_tokenizer

    # The tiny preset with pad = decoder start = 0, the layout Lamorel's forward assumes (T5's).
    models.build_word_tokenizer = functools.partial(build_word_tokenizer, specials_first=True)
    cfg = from_raw(raw)

    def rl_main(backend: Any) -> None:
        result = {"module_outputs": backend.module_outputs(PROMPTS, ACTIONS)}
        if backend.n_rl == 1:  # (other RL ranks relay rank 0's calls: a direct call would not be in lockstep)
            # What a Lamorel user writes: one call, the candidates again as actions=, one minibatch.
            result["custom_module_fns"] = backend.caller.custom_module_fns(
                list(MODULE_FUNCTION_KEYS), contexts=PROMPTS, candidates=ACTIONS, actions=ACTIONS,
                minibatch_size=sum(len(a) for a in ACTIONS),
            )  # fmt: skip
        result["act"] = backend.act(PROMPTS, ACTIONS, value=True)
        torch.save(result, out)

    run_process(cfg, rl_main)


@pytest.mark.lamorel
@pytest.mark.parametrize("servers", [1, 2])
def test_lamorel_module_functions_match_the_local_agent(servers, tmp_path, pad_first_tokenizer):
    """log pi, Q and V of the registered module functions, through real Lamorel servers (their own
    pre-encoded seq2seq forward), equal the local agent's evaluate on the same prompts (1e-5)."""
    pytest.importorskip("lamorel")
    from sac_glam.run.factory import make_agent

    # model.minibatch_size=4: module_outputs sends the 3 prompts (5, 2, 4 actions) as 3 calls; with 2
    # servers, in 2 rounds, the second with a dummy call from RL rank 1.
    extra = ["critic.share_llm=true", "model.tiny.pretrain_steps=0", "model.minibatch_size=4"]
    cfg = _lamorel_cfg("ppo", servers, extra)
    world = 2 * servers
    out = str(tmp_path / "modfn_result.pt")
    _spawn_world(_modfn_worker, world, cfg, out)
    lam = torch.load(out, weights_only=False)

    agent = make_agent(cfg)
    with torch.no_grad():
        ref = agent.evaluate(PROMPTS, ACTIONS, q=True, v=True)
    assert ref.q_KBA is not None and ref.v_B is not None
    diffs = {"log_pi": 0.0, "q": 0.0, "value": 0.0}
    for b, acts in enumerate(ACTIONS):
        n = len(acts)
        mine = lam["module_outputs"][b]
        pairs = [
            ("log_pi", mine["log_pi"], ref.log_pi_BA[b, :n]),
            ("q", mine["q"], ref.q_KBA[:, b, :n]),
            ("value", mine["value"], ref.v_B[b]),
        ]
        if servers == 1:
            direct = lam["custom_module_fns"][b]
            pairs += [
                ("log_pi", direct["log_pi"], ref.log_pi_BA[b, :n]),
                ("q", direct["q"], ref.q_KBA[:, b, :n].T),
                ("value", direct["value"], ref.v_B[b].expand(n)),
            ]
        for key, got, want in pairs:
            assert got.shape == want.shape, (key, got.shape, want.shape)
            diffs[key] = max(diffs[key], float((got - want).abs().max()))
    assert all(d < 1e-5 for d in diffs.values()), diffs
    # ... and the exact path (our scorer in the server) agrees with both.
    assert float((lam["act"].log_pi_BA - ref.log_pi_BA).abs().max()) < 1e-5
    assert len(lam["module_outputs"]) == len(PROMPTS)
    print(f"module functions vs local evaluate ({cfg.model.normalization}, {servers} server(s)): " +
          ", ".join(f"|{k}| {v:.2e}" for k, v in diffs.items()))  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# Preemption through lamorel-launch (needs lamorel)
# ---------------------------------------------------------------------------------------------------


def _start_tiny_lamorel_run(
    tmp_path: Path, overrides: list[str]
) -> tuple[list[str], dict[str, str], Path, Path, Any]:
    """``lamorel-launch`` of the tiny CPU Lamorel config in the background: (cmd, env, run_dir, log, proc)."""
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "sac_glam.cli.launch", "--config-name", "lamorel_cpu", *overrides, "train.threads=1",
           "train.progress=false", "train.tensorboard=false", "model.tiny.d_model=32", "model.tiny.pretrain_steps=0", "model.tiny.d_ff=64",
           "critic.width=32", f"train.run_dir={run_dir}"]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "first.log"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    return cmd, env, run_dir, log, proc


def _wait_for_grad_steps(proc: Any, run_dir: Path, log: Path, n: int, poll_s: float) -> None:
    """Wait (at most 300 s) until the run has logged ``n`` gradient steps; it must still be running."""
    deadline = time.monotonic() + 300
    while grad_steps(run_dir / "metrics.jsonl") < n and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(poll_s)
    assert proc.poll() is None, log.read_text()[-3000:]
    assert grad_steps(run_dir / "metrics.jsonl") >= n, (
        f"training did not reach {n} gradient steps within 300 s"
    )


@pytest.mark.lamorel
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="lists processes through /proc")
def test_lamorel_launch_sigusr1_checkpoints_exits_75_and_resumes(tmp_path):
    pytest.importorskip("lamorel")
    pytest.importorskip("lamorel_launcher")
    cmd, env, run_dir, log, proc = _start_tiny_lamorel_run(
        tmp_path, ["train.total_steps=2000", "train.checkpoint_every=0", "train.log_every=64"]
    )
    try:
        _wait_for_grad_steps(proc, run_dir, log, 1, poll_s=0.5)
        proc.send_signal(signal.SIGUSR1)
        code = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        # Every Lamorel process carries the run directory on its command line.
        lingering = kill_lingering(str(run_dir), wait_s=30)
    text = log.read_text()
    assert code == 75, text[-3000:]
    assert not lingering, lingering
    assert (run_dir / "checkpoint.pt").is_file()
    assert not (run_dir / ".preempted").exists() and not (run_dir / ".lamorel_rl0.pid").exists()
    assert "checkpoint saved at step" in text and "Closing LLM server" in text

    # The same command resumes where the signal stopped it and finishes.
    second = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, (second.stdout + second.stderr)[-3000:]
    match = re.search(rf"resuming {re.escape(str(run_dir))} at step (\d+)", second.stdout)
    assert match and int(match.group(1)) > 0, second.stdout[-3000:]
    assert "done: 2016 steps" in second.stdout
    print(f"preempted with exit 75, resumed at step {match.group(1)}")


# ---------------------------------------------------------------------------------------------------
# A dead process (docs/checkpoints.md, "A dead process")
# ---------------------------------------------------------------------------------------------------


def _failure(rank: int, exitcode: int) -> dict[str, Any]:
    return {"rank": rank, "pid": 100 + rank, "exitcode": exitcode,
            "signal": signal.Signals(-exitcode).name if exitcode < 0 else None, "host": "node1"}  # fmt: skip


def test_failure_records_come_from_the_elastic_agents_report():
    from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

    from sac_glam.cli.lamorel_watch import failure_records

    failures = {3: ProcessFailure(1, 4242, -signal.SIGKILL, "<N/A>"), 0: ProcessFailure(0, 4241, 76, "<N/A>")}
    assert failure_records(failures, host="node1") == [
        {"rank": 0, "pid": 4241, "exitcode": 76, "signal": None, "host": "node1"},
        {"rank": 3, "pid": 4242, "exitcode": -9, "signal": "SIGKILL", "host": "node1"},
    ]


def test_describe_names_the_dead_process_not_the_ones_that_lost_it():
    from sac_glam.cli.lamorel_watch import EXIT_PEER_LOST, describe

    # 2 RL processes + 2 servers: rank 3 is LLM server 1; rank 0 only lost it (exit 76).
    message, code = describe([_failure(0, 76), _failure(3, -signal.SIGKILL)], 2, "/r")
    assert code == EXIT_PEER_LOST == 76
    assert message.startswith(
        "LLM server 1 (rank 3, pid 103 on node1) was killed by SIGKILL (usually the out-of-memory"
    )
    assert "RL process 0" not in message and message.endswith("resume from the last checkpoint in /r")
    # A process that crashed with its own error is not "resumable": exit 1, and the fix comes first.
    message, code = describe([_failure(1, 1), _failure(0, 76)], 1, "/r")
    assert code == 1 and message.startswith("LLM server 0 (rank 1, pid 101 on node1) exited with code 1")
    assert "fix the error, then run the same command" in message
    # Only lost connections: the dead process was on another node.
    message, code = describe([_failure(0, 76), _failure(1, 76)], 4, "/r")
    assert code == 76 and message.startswith("a Lamorel process on another node died or stopped answering")
    assert "RL process 0 (rank 0), RL process 1 (rank 1)" in message


def test_lost_peer_recognises_gloo_and_nothing_else():
    from sac_glam.cli.lamorel_watch import lost_peer

    gloo = RuntimeError(
        "[gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:2966. More.\nx"
    )
    assert (
        lost_peer(gloo)
        == "[gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:2966. More."
    )
    # Raised while handling it (the servers' close in run_process's finally fails too).
    try:
        try:
            raise gloo
        except RuntimeError:
            raise ValueError("close failed")  # noqa: B904
    except ValueError as err:
        assert lost_peer(err) is not None
    assert lost_peer(ValueError("a bug")) is None


def test_run_launcher_prints_the_dead_process_last_and_exits_76(tmp_path, capsys):
    from sac_glam.cli.lamorel_watch import failures_file
    from sac_glam.cli.launch import run_launcher

    # A stand-in launcher that writes what the wrapped agent writes, where lamorel-launch says.
    fake = ("import json, os, pathlib, sys; pathlib.Path(os.environ['SAC_GLAM_FAILURES_FILE']).write_text(json.dumps(" + repr([_failure(0, 76), _failure(1, -9)])
            + ")); sys.exit(1)")  # fmt: skip
    # Machine rank 1 of a multi-node run: its own file (every node shares the run directory).
    assert run_launcher([sys.executable, "-c", fake], tmp_path, poll_s=0.05, n_rl=1, machine_rank=1) == 76
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("lamorel-launch: LLM server 0 (rank 1, pid 101 on node1) was killed by SIGKILL")
    assert not failures_file(tmp_path, 1).exists() and failures_file(tmp_path, 1).name.endswith("node1.json")
    # A launcher that succeeds is not reported on, whatever a stale file says.
    assert run_launcher([sys.executable, "-c", "pass"], tmp_path, poll_s=0.05) == 0


@pytest.mark.lamorel
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="lists processes through /proc")
def test_a_killed_llm_server_is_named_exits_76_and_the_same_command_resumes(tmp_path):
    pytest.importorskip("lamorel")
    pytest.importorskip("lamorel_launcher")
    cmd, env, run_dir, log, proc = _start_tiny_lamorel_run(tmp_path, [
        "train.total_steps=512", "train.checkpoint_every=2", "train.log_every=32", "sac.learning_starts=64",
        "train.eval_episodes=4",
    ])  # fmt: skip
    try:
        # One update is 4 gradient steps (n_updates 4) and the checkpoint after it is written once its metrics
        # record is: 8 logged steps mean a checkpoint past step 0 is complete (killing at 4 races it).
        _wait_for_grad_steps(proc, run_dir, log, 8, poll_s=0.2)
        [server] = pids_with_env(str(run_dir), "RANK=1")  # rank 1 = LLM server 0 (1 RL process)
        os.kill(server, signal.SIGKILL)  # what the out-of-memory killer sends
        code = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        lingering = kill_lingering(str(run_dir), wait_s=0)  # none may outlive lamorel-launch's exit
    text = log.read_text()
    assert code == 76, text[-3000:]
    assert not lingering, lingering
    last = text.strip().splitlines()[-1]
    assert (
        last.startswith(f"lamorel-launch: LLM server 0 (rank 1, pid {server} on ")
        and "killed by SIGKILL" in last
    )
    assert last.endswith(f"run the same command to resume from the last checkpoint in {run_dir}"), last
    assert "Traceback" not in text, text[-3000:]  # the survivors' gloo error is one line, not a trace
    killed_at = grad_steps(run_dir / "metrics.jsonl")

    # The same command resumes from the last checkpoint (step > 0) and finishes the budget.
    second = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, (second.stdout + second.stderr)[-3000:]
    match = re.search(rf"resuming {re.escape(str(run_dir))} at step (\d+)", second.stdout)
    assert match and int(match.group(1)) > 0, second.stdout[-3000:]
    assert "done: 512 steps" in second.stdout
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    before_end = [s for s in steps if s < 512]
    assert before_end == sorted(set(before_end)), steps  # nothing logged twice across the resume
    print(f"server killed at {killed_at} gradient steps: exit 76, resumed at step {match.group(1)}")
