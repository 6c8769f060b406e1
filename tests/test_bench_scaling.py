"""``sac-glam bench scaling`` smoke tests: the smallest sweeps run, and their tables make sense."""

import re

import torch

from sac_glam.benchmarks.scaling import HEADER, main

SMALL = ["--batch-sizes", "8", "16", "--objects", "3", "--batch", "8", "--updates", "2", "--warmup", "1",
         "--fill", "2", "--threads", "1", "env.n_envs=8"]  # fmt: skip


def _tables(out: str) -> dict[str, list[dict[str, float]]]:
    """Each table's rows as {column: value}, keyed by the title line above its header."""
    lines = out.splitlines()
    tables = {}
    for i, line in enumerate(lines):
        if line.split() == [h for h in HEADER]:
            rows = []
            for row in lines[i + 1 :]:
                if not row.strip():
                    break
                cells = row.split()
                assert len(cells) == len(HEADER), row
                rows.append(dict(zip(HEADER, map(float, cells), strict=True)))
            tables[lines[i - 1]] = rows
    return tables


def test_sweeps_print_one_row_per_setting_with_growing_pairs(capsys):
    threads = torch.get_num_threads()
    main(SMALL)
    assert torch.get_num_threads() == threads  # --threads is restored afterwards
    out = capsys.readouterr().out
    assert "median of 2 updates after 1 warm-up" in out
    tables = _tables(out)
    (a_title, a), (b_title, b) = tables.items()
    assert a_title.startswith("(a) batch size, N = 3") and b_title.startswith(
        "(b) objects per scene N, batch 8"
    )
    assert [(r["batch"], r["N"]) for r in a] == [(8, 3), (16, 3)]
    assert [(r["batch"], r["N"]) for r in b] == [(8, 3)]
    for r in a + b:
        # N = 3: Go to the 3 objects (2 while holding one), Grasp, Release.
        assert 4 <= r["actions/state"] <= 5
        # pairs of the current and the next states: between 4 and 5 actions each.
        assert 2 * 4 * r["batch"] <= r["pairs/update"] <= 2 * 5 * r["batch"]
        assert 0 < r["fastest"] <= r["ms/update"]
        assert 0 < r["sampling"] < r["ms/update"]
        assert r["us/pair"] > 0 and r["us/transition"] > 0
        # the median per transition and per pair (within the rounding of the printed columns)
        for column, per in (("us/transition", r["batch"]), ("us/pair", r["pairs/update"])):
            expected = 1e3 * r["ms/update"] / per
            assert abs(r[column] - expected) <= 0.01 * expected + 1, column
    assert a[1]["pairs/update"] > a[0]["pairs/update"]
    assert a[0]["relative"] == 1.0 and b[0]["relative"] == 1.0


def test_profile_prints_top_operators_and_a_consistent_split(capsys):
    main([*SMALL[:-1], "--batch-sizes", "8", "--profile", "--profile-updates", "1", "env.n_envs=8"])
    out = capsys.readouterr().out
    ops = out[out.index("torch.profiler") : out.index("Coarse split")].splitlines()
    assert ops[1].split() == ["operator", "calls", "self", "ms", "self", "%", "total", "ms"]
    assert len([line for line in ops[2:] if line.strip()]) == 12
    assert any(line.startswith(("aten::mm", "aten::bmm", "aten::addmm")) for line in ops[2:])
    split = {}
    for line in out[out.index("Coarse split") :].splitlines()[1:]:
        m = re.fullmatch(r"(.*?)\s+(-?[\d.]+) ms\s+(-?[\d.]+)%", line)
        assert m, line
        split[m.group(1)] = float(m.group(2))
    total = split["total (sample + update)"]
    top = ["sample batch + render prompts (buffer.sample)", "target: next-state policy + target critic, no grad",
           "current state: actor + critic forward", "losses + one backward (critic + actor)",
           "Adam step (LLM + critic)", "alpha step + Polyak target update"]  # fmt: skip
    assert abs(sum(split[k] for k in top) - total) < 0.05  # one update: the parts tile it
    assert split["same, without the timing hooks (interleaved)"] > 0
    for key in ("  policy LLM", "  actor: policy LLM", "  critic: critic LLM + Q heads",
                "  critic backward: Q heads + critic LLM", "  actor backward: policy LLM"):  # fmt: skip
        assert split[key] > 0, key
    assert (
        split["  critic backward: Q heads + critic LLM"] + split["  actor backward: policy LLM"]
        <= split[top[3]]
    )
