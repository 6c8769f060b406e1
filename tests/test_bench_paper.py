"""``sac-glam bench paper`` on a tiny make-model directory: every part runs and prints its fields."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import torch

from sac_glam.benchmarks.paper import main, states
from sac_glam.cli import main as cli_main
from sac_glam.llm.make_model import make_model
from sac_glam.run.configs import load_config


def _value(out: str, label: str) -> str:
    match = re.search(rf"^{re.escape(label)}\s+(.+)$", out, re.MULTILINE)
    assert match, f"no {label!r} row in:\n{out}"
    return match.group(1)


def _seconds(text: str) -> float:
    seconds = float(text.split(" s")[0])
    assert seconds > 0, text
    return seconds


def test_bench_paper_prints_every_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = make_model("flan-t5-base", tmp_path / "model", tiny=True)
    threads = torch.get_num_threads()
    cli_main(["bench", "paper", "--model-dir", str(model), "--batch", "4", "--repeats", "1"])
    assert torch.get_num_threads() == threads  # --threads is restored afterwards
    out = capsys.readouterr().out
    assert "lora=True, 4-bit=True, sum" in _value(out, "model")  # the paper config, unchanged
    _seconds(_value(out, "SAC gradient step, batch 4"))
    _seconds(_value(out, "PPO minibatch, 32 transitions"))  # the rollout rounds up to one vector step
    assert float(_value(out, "peak RSS (before Lamorel's model)").split()[0]) > 0
    cfg = load_config("sac_glam", [f"model.name={model}"])
    pairs = sum(map(len, states(cfg, 4).actions))
    _seconds(_value(out, f"acting step, 32 envs ({pairs} pairs)"))
    per_pair = _value(out, "  per scored (prompt, action) pair")
    assert re.fullmatch(r"\d+ us, [\d,]+ pairs/s", per_pair), per_pair
    if importlib.util.find_spec("lamorel") is None:
        assert "skipped: lamorel is not importable" in _value(out, "Lamorel scorer")
    else:
        assert float(_value(out, "  max |score ours - Lamorel|")) < 1e-3


def test_bench_paper_rejects_a_zero_batch(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--batch", "0"])
    assert exc.value.code == 2
    assert "--batch and --repeats must be >= 1, got 0 and 3" in capsys.readouterr().err
