"""HER: relabelled copies (Section 2.3) and batch composition strategies (Appendix E)."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import pytest
import torch

from sac_glam.buffers.her import goal_type_prior, hindsight_relabels
from sac_glam.buffers.replay import Episode, ReplayBuffer
from sac_glam.prompts import render_prompt

GOAL = "Grow red cat then grasp blue dog"  # grow_then_grasp
G1 = "Grasp red cat"  # grasp
G2 = "Grow red cat"  # grow
G3 = "Grow red cat then grow blue dog"  # grow_then_grow


def scripted_episode(tag: str = "e0", goal: str = GOAL, hindsight: dict[str, int] | None = None) -> Episode:
    """Length 6, success at t = 5 for the pursued goal; the partner saw g1 at t=2 and g2 at t=4."""
    T = 6
    return Episode(
        goal=goal,
        observations=[f"{tag} o{t}" for t in range(T + 1)],
        actions=[["Grasp", "Release", f"Go to {tag} {t}"] for t in range(T + 1)],
        action_ids=np.array([2, 0, 2, 2, 0, 1], dtype=np.int64),
        rewards=np.array([0, 0, 0, 0, 0, 1], dtype=np.float32),
        terminated=True,
        truncated=False,
        hindsight={G1: 2, G2: 4, goal: 5} if hindsight is None else hindsight,
    )


def decoder(goals: list[str], tags: list[str], T: int = 6) -> dict[str, tuple[str, str, int]]:
    return {render_prompt(f"{tag} o{t}", g): (g, tag, t) for g in goals for tag in tags for t in range(T + 1)}


@pytest.mark.parametrize("n", [1, 3])
def test_relabelled_copies_cover_the_prefix_with_reward_at_the_cut(n: int) -> None:
    gamma = 0.9
    buf = ReplayBuffer(capacity=100, n_step=n, gamma=gamma, her=True, her_strategy="uniform")
    buf.add_episode(scripted_episode())
    # 6 env transitions; copies 0..2 (3) and 0..4 (5); the pursued goal's report is not duplicated.
    assert (len(buf), buf.n_env_transitions, buf.n_her_transitions) == (14, 6, 8)
    assert buf.her_share() == pytest.approx(8 / 14)
    decode = decoder([GOAL, G1, G2], ["e0"])
    seen: dict[tuple[str, bool], set[int]] = defaultdict(set)
    batch = buf.sample(3000, np.random.default_rng(0))
    for b, prompt in enumerate(batch.prompts):
        goal, _, t = decode[prompt]
        next_goal, _, t_next = decode[batch.next_prompts[b]]
        her = bool(batch.is_her[b])
        seen[(goal, her)].add(t)
        # The whole observed return, no window: the pursued goal's success at 5, a copy's 1 at its cut.
        end = {G1: 2, G2: 4}[goal] if her else 5
        assert float(batch.returns_to_go[b]) == pytest.approx(gamma ** (end - t), rel=1e-6)
        assert next_goal == goal  # the next prompt carries the same (relabelled) goal
        assert batch.actions[b] == ["Grasp", "Release", f"Go to e0 {t}"]
        assert int(batch.action_ids[b]) == [2, 0, 2, 2, 0, 1][t]
        if not her:
            continue
        cut = {G1: 2, G2: 4}[goal]
        k = min(n, cut + 1 - t)
        # Reward 0 before the cut and 1 at it: the only non-zero term is gamma^(cut - t) if in the window.
        expected = gamma ** (cut - t) if cut - t < k else 0.0
        assert float(batch.returns[b]) == pytest.approx(expected, rel=1e-6)
        assert t_next == t + k
        # Terminal at the cut: a window that reaches it never bootstraps.
        assert float(batch.discounts[b]) == pytest.approx(0.0 if t + k == cut + 1 else gamma**k)
        assert batch.goal_types[b] == {G1: "grasp", G2: "grow"}[goal]
    assert seen == {(GOAL, False): set(range(6)), (G1, True): {0, 1, 2}, (G2, True): {0, 1, 2, 3, 4}}


def test_her_copies_refer_to_the_episode_instead_of_copying_texts() -> None:
    plain = ReplayBuffer(capacity=100, her=False)
    her = ReplayBuffer(capacity=100, her=True)
    for b in (plain, her):
        b.add_episode(scripted_episode())
    assert len(her) == len(plain) + 8
    # The same stored steps (T+1 rows) and the same interned texts: copies are (episode, goal, cut).
    assert len(her._steps) == len(plain._steps) == 7
    assert len(her._observations) == len(plain._observations) == 7
    assert len(her._action_lists) == len(plain._action_lists) == 7
    assert len(her._sources) == 3 and len(plain._sources) == 1
    # Texts shown many times are stored once: identical observations share one interned entry.
    ep = scripted_episode("e1")
    ep.observations = ["same scene"] * 7
    her.add_episode(ep)
    assert len(her._observations) == 7 + 1


def test_without_her_hindsight_is_ignored_and_ratio_falls_back_to_env() -> None:
    buf = ReplayBuffer(capacity=100, her=False, her_strategy="ratio", her_ratio=0.5)
    buf.add_episode(scripted_episode())
    assert (len(buf), buf.her_share()) == (6, 0.0)
    assert not buf.sample(64, np.random.default_rng(0)).is_her.any()


def test_hindsight_relabels_validation() -> None:
    assert hindsight_relabels("a", {"a": 1, "b": 0, "c": 1}, 2) == [("b", 0), ("c", 1)]
    with pytest.raises(ValueError, match="outside the episode"):
        hindsight_relabels("a", {"b": 2}, 2)


def filled_buffer(strategy: str, **kwargs: object) -> ReplayBuffer:
    """Episodes of four goal types; HER copies are grasp/grow (simple) goals, as in Playground-Text."""
    buf = ReplayBuffer(capacity=10_000, n_step=3, gamma=0.9, her=True, her_strategy=strategy, **kwargs)  # type: ignore[arg-type]
    for i in range(30):
        goal = [GOAL, G3, G1][i % 3]
        buf.add_episode(scripted_episode(f"e{i}", goal=goal, hindsight={G1: i % 6, G2: 4} if i % 2 else {}))
    return buf


@pytest.mark.parametrize("ratio", [0.5, 0.25])
def test_ratio_gives_the_configured_her_share(ratio: float) -> None:
    buf = filled_buffer("ratio", her_ratio=ratio)
    rng = np.random.default_rng(0)
    shares = [buf.sample(256, rng).is_her.float().mean().item() for _ in range(80)]  # 20,480 samples
    assert all(s == round(ratio * 256) / 256 for s in shares)  # exact per batch (a rounded count)
    assert buf.her_share() != pytest.approx(ratio, abs=0.05)  # the stored share differs: not a fluke
    odd = buf.sample(7, rng).is_her
    assert int(odd.sum()) == round(ratio * 7)


def test_uniform_matches_the_stored_share() -> None:
    buf = filled_buffer("uniform")
    batch = buf.sample(20_000, np.random.default_rng(0))
    p = buf.her_share()
    sd = (p * (1 - p) / 20_000) ** 0.5
    assert abs(batch.is_her.float().mean().item() - p) < 4 * sd
    # Goal types as stored, too.
    counts = buf.goal_type_counts()
    freq = Counter(batch.goal_types)
    for t, c in counts.items():
        q = c / len(buf)
        assert abs(freq[t] / 20_000 - q) < 4 * (q * (1 - q) / 20_000) ** 0.5 + 1e-9


def test_prior_matches_the_goal_type_prior_among_available_types() -> None:
    prior = {"grasp": 0.1, "grow": 0.2, "grow_then_grasp": 0.3, "grow_then_grow": 0.15, "unseen": 0.25}
    buf = filled_buffer("prior", goal_type_prior=prior)
    assert set(buf.goal_type_counts()) == {"grasp", "grow", "grow_then_grasp", "grow_then_grow"}
    batch = buf.sample(20_000, np.random.default_rng(0))
    freq = Counter(batch.goal_types)
    assert "unseen" not in freq  # no stored transition: dropped, the rest renormalised (by 0.75)
    for t in ("grasp", "grow", "grow_then_grasp", "grow_then_grow"):
        q = prior[t] / 0.75
        assert abs(freq[t] / 20_000 - q) < 4 * (q * (1 - q) / 20_000) ** 0.5, t
    # Within a type, env and HER transitions are mixed (grasp has both), unlike a ratio.
    grasp_her = [
        bool(h) for h, t in zip(batch.is_her.tolist(), batch.goal_types, strict=True) if t == "grasp"
    ]
    assert 0 < sum(grasp_her) < len(grasp_her)


def test_goal_type_prior_is_figure_4() -> None:
    prior = goal_type_prior("train")
    assert prior == pytest.approx(
        {
            "grasp": 136 / 8470,
            "grow": 46 / 8470,
            "grow_then_grasp": 6218 / 8470,
            "grow_then_grow": 2070 / 8470,
        }
    )
    assert prior["grow_then_grasp"] + prior["grow_then_grow"] == pytest.approx(0.978, abs=1e-3)


def test_batch_dtypes_and_shapes() -> None:
    buf = filled_buffer("ratio")
    batch = buf.sample(32, np.random.default_rng(0))
    assert batch.action_ids.dtype == torch.int64 and batch.action_ids.shape == (32,)
    assert batch.returns.dtype == batch.discounts.dtype == torch.float32
    assert batch.is_her.dtype == torch.bool
    assert len(batch.prompts) == len(batch.next_prompts) == len(batch.actions) == len(batch.goal_types) == 32
