"""Replay buffer: n-step targets against closed forms, eviction, capacity, checkpoint round trip."""

from __future__ import annotations

import pickle
from collections import deque

import numpy as np
import pytest

from sac_glam.buffers.replay import Episode, ReplayBuffer, SACBatch
from sac_glam.config import BufferConfig
from sac_glam.prompts import render_prompt
from sac_glam.run.checkpoint import load_checkpoint, save_checkpoint

GOAL = "Grasp red dog"
OTHER = "Grow blue cat"
G1 = "Grasp any dog"
G2 = "Grasp red animal"


def make_episode(
    tag: str,
    rewards: list[float],
    *,
    terminated: bool = True,
    goal: str = GOAL,
    hindsight: dict[str, int] | None = None,
) -> Episode:
    """Observation ``"{tag} o{t}"``; the action list at t is ``["Grasp", "{tag} a{t}"]``, action t % 2."""
    T = len(rewards)
    return Episode(
        goal=goal,
        observations=[f"{tag} o{t}" for t in range(T + 1)],
        actions=[["Grasp", f"{tag} a{t}"] for t in range(T + 1)],
        action_ids=np.arange(T, dtype=np.int64) % 2,
        rewards=np.asarray(rewards, dtype=np.float32),
        terminated=terminated,
        truncated=not terminated,
        hindsight=hindsight or {},
    )


class Decoder:
    """Prompt text -> (goal, tag, t), built from every candidate, so it does not depend on the format."""

    def __init__(self, goals: list[str], tags: list[str], T: int) -> None:
        self.table = {
            render_prompt(f"{tag} o{t}", g): (g, tag, t) for g in goals for tag in tags for t in range(T + 1)
        }

    def __call__(self, prompt: str) -> tuple[str, str, int]:
        return self.table[prompt]


def per_t(batch: SACBatch, decode: Decoder) -> dict[int, tuple[float, float, int]]:
    """t -> (return, discount, t of the next prompt), checking each t always gives the same target."""
    out: dict[int, tuple[float, float, int]] = {}
    for b in range(len(batch.prompts)):
        _, tag, t = decode(batch.prompts[b])
        _, tag2, t2 = decode(batch.next_prompts[b])
        assert tag2 == tag
        assert batch.actions[b] == ["Grasp", f"{tag} a{t}"]
        assert batch.next_actions[b] == ["Grasp", f"{tag} a{t2}"]
        assert int(batch.action_ids[b]) == t % 2
        row = (float(batch.returns[b]), float(batch.discounts[b]), t2)
        if t in out:
            assert out[t] == row
        out[t] = row
    return out


REWARDS = [1.0, 2.0, 3.0, 4.0, 5.0]  # distinct rewards, so a wrong index changes the sum


@pytest.mark.parametrize(
    ("terminated", "n", "expected"),
    [
        # gamma = 0.9, T = 5, t -> (sum_{i<k} 0.9^i r_{t+i}, discount, t + k), k = min(n, 5 - t).
        (
            True,
            3,
            {
                0: (1 + 0.9 * 2 + 0.81 * 3, 0.729, 3),  # window fully inside
                1: (2 + 0.9 * 3 + 0.81 * 4, 0.729, 4),
                2: (3 + 0.9 * 4 + 0.81 * 5, 0.0, 5),  # window ends exactly at the termination
                3: (4 + 0.9 * 5, 0.0, 5),  # termination inside the window: partial sum, no bootstrap
                4: (5.0, 0.0, 5),  # last transition
            },
        ),
        (
            False,
            3,
            {
                0: (1 + 0.9 * 2 + 0.81 * 3, 0.729, 3),
                1: (2 + 0.9 * 3 + 0.81 * 4, 0.729, 4),
                2: (3 + 0.9 * 4 + 0.81 * 5, 0.729, 5),
                3: (4 + 0.9 * 5, 0.81, 5),  # truncation inside the window: bootstrap from o_T with 0.9^2
                4: (5.0, 0.9, 5),  # last transition of a truncated episode still bootstraps
            },
        ),
        (True, 1, {0: (1.0, 0.9, 1), 1: (2.0, 0.9, 2), 2: (3.0, 0.9, 3), 3: (4.0, 0.9, 4), 4: (5.0, 0.0, 5)}),
        (
            False,
            1,
            {0: (1.0, 0.9, 1), 1: (2.0, 0.9, 2), 2: (3.0, 0.9, 3), 3: (4.0, 0.9, 4), 4: (5.0, 0.9, 5)},
        ),
    ],
)
def test_n_step_targets_closed_form(
    terminated: bool, n: int, expected: dict[int, tuple[float, float, int]]
) -> None:
    buf = ReplayBuffer(capacity=100, n_step=n, gamma=0.9, her_strategy="uniform")
    buf.add_episode(make_episode("e0", REWARDS, terminated=terminated))
    got = per_t(buf.sample(500, np.random.default_rng(0)), Decoder([GOAL], ["e0"], 5))
    assert sorted(got) == [0, 1, 2, 3, 4]
    for t, (ret, disc, t_next) in expected.items():
        assert got[t][0] == pytest.approx(ret, rel=1e-6), t
        assert got[t][1] == pytest.approx(disc, rel=1e-6), t
        assert got[t][2] == t_next, t


@pytest.mark.parametrize("n", [2, 3, 5, 20])
@pytest.mark.parametrize("terminated", [True, False])
def test_n_step_matches_reference_loop(n: int, terminated: bool) -> None:
    rng = np.random.default_rng(n)
    rewards = rng.normal(size=12).round(3).tolist()
    buf = ReplayBuffer(capacity=100, n_step=n, gamma=0.95, her_strategy="uniform")
    buf.add_episode(make_episode("e0", rewards, terminated=terminated))
    batch = buf.sample(2000, rng)
    got = per_t(batch, Decoder([GOAL], ["e0"], 12))
    decode = Decoder([GOAL], ["e0"], 12)
    for prompt, to_go in zip(batch.prompts, batch.returns_to_go.tolist(), strict=True):
        t = decode(prompt)[2]  # returns_to_go: the n-step sum with the window stretched to the end
        assert to_go == pytest.approx(sum(0.95**i * r for i, r in enumerate(rewards[t:])), rel=1e-5, abs=1e-6)
    for t in range(12):
        ret, k = 0.0, 0
        while k < n and t + k < 12:  # reference: accumulate until n rewards or the episode's end
            ret += 0.95**k * rewards[t + k]
            k += 1
        disc = 0.0 if (terminated and t + k == 12) else 0.95**k
        assert got[t][0] == pytest.approx(ret, rel=1e-5, abs=1e-6)
        assert got[t][1] == pytest.approx(disc, rel=1e-6)
        assert got[t][2] == t + k


def test_episode_validation_names_the_problem() -> None:
    buf = ReplayBuffer(capacity=100)
    ep = make_episode("e0", [0.0, 1.0])
    ep.observations.pop()
    with pytest.raises(ValueError, match="T\\+1=3 observations"):
        buf.add_episode(ep)
    ep = make_episode("e0", [0.0, 1.0])
    ep.action_ids[1] = 2
    with pytest.raises(ValueError, match="action_ids\\[1\\]=2"):
        buf.add_episode(ep)
    ep = make_episode("e0", [0.0, 1.0])
    ep.rewards = np.zeros(3, dtype=np.float32)
    with pytest.raises(ValueError, match="rewards shape"):
        buf.add_episode(ep)
    ep = make_episode("e0", [0.0, 1.0])
    ep.terminated = ep.truncated = False
    with pytest.raises(ValueError, match="neither terminated nor truncated"):
        buf.add_episode(ep)
    assert len(buf) == 0


def test_unknown_goal_raises_before_anything_is_stored_or_evicted() -> None:
    buf = ReplayBuffer(capacity=10, her=True)
    buf.add_episode(make_episode("e0", [0.0] * 8))
    state = buf.state_dict()
    with pytest.raises(ValueError, match="unknown goal"):
        buf.add_episode(make_episode("e1", [0.0] * 8, hindsight={"Dance with the cat": 1}))
    assert len(buf) == 8 and buf.n_episodes == 1
    assert pickle.dumps(buf.state_dict()) == pickle.dumps(state)


def test_eviction_oldest_first_with_her_copies() -> None:
    # Each episode: 10 env transitions + HER copies cut at 2 and 4 (3 + 5) = 18 transitions.
    buf = ReplayBuffer(capacity=40, n_step=3, gamma=0.9, her=True, her_strategy="uniform")
    tags = [f"e{i}" for i in range(6)]
    for i, tag in enumerate(tags):
        buf.add_episode(make_episode(tag, [0.0] * 10, terminated=False, hindsight={G1: 2, G2: 4}))
        assert len(buf) <= buf.capacity
        assert len(buf) == 18 * min(i + 1, 2)  # a third episode never fits with two others (54 > 40)
        assert buf.n_her_transitions == 8 * min(i + 1, 2)
    decode = Decoder([GOAL, G1, G2], tags, 10)
    seen = {decode(p)[1] for p in buf.sample(2000, np.random.default_rng(0)).prompts}
    assert seen == {"e4", "e5"}  # the two newest; evicted episodes' env and HER data never come back
    # Evicted texts are freed: only the stored episodes' observations and action lists remain interned.
    assert len(buf._observations) == 2 * 11
    assert len(buf._action_lists) == 2 * 11
    assert buf.goal_type_counts() == {"grasp": 36}
    assert buf.n_episodes == 2


def test_len_never_exceeds_capacity_random_episodes() -> None:
    rng = np.random.default_rng(1)
    buf = ReplayBuffer(capacity=200, n_step=3, gamma=0.9, her=True)
    model: deque[int] = deque()  # reference: sizes of the stored episodes, oldest first
    for i in range(150):
        T = int(rng.integers(1, 16))
        cuts = {g: int(rng.integers(0, T)) for g in (G1, G2, OTHER) if rng.random() < 0.5}
        buf.add_episode(make_episode(f"e{i}", [0.0] * T, terminated=bool(rng.random() < 0.3), hindsight=cuts))
        size = T + sum(t + 1 for g, t in cuts.items() if g != GOAL)
        while sum(model) + size > 200:
            model.popleft()  # whole episodes, oldest first, only as many as needed
        model.append(size)
        assert len(buf) == sum(model) <= 200
        assert buf.n_episodes == len(model)
        assert len(buf) == buf.n_env_transitions + buf.n_her_transitions
        assert sum(buf.goal_type_counts().values()) == len(buf)
    batch = buf.sample(256, rng)
    assert len(batch.prompts) == 256


def test_capacity_counting_env_transitions_keeps_her_copies_beyond_capacity() -> None:
    # Same episodes as above (10 env + 8 HER transitions each): counting env transitions only, four
    # episodes fit in 40 (72 transitions stored), a fifth evicts the oldest with its copies.
    buf = ReplayBuffer(
        capacity=40, n_step=3, gamma=0.9, her=True, her_strategy="uniform", capacity_counts="env"
    )
    tags = [f"e{i}" for i in range(6)]
    for i, tag in enumerate(tags):
        buf.add_episode(make_episode(tag, [0.0] * 10, terminated=False, hindsight={G1: 2, G2: 4}))
        assert buf.n_env_transitions == buf.n_counted == 10 * min(i + 1, 4) <= buf.capacity
        assert len(buf) == 18 * min(i + 1, 4)
    decode = Decoder([GOAL, G1, G2], tags, 10)
    seen = {decode(p)[1] for p in buf.sample(2000, np.random.default_rng(0)).prompts}
    assert seen == {"e2", "e3", "e4", "e5"}
    assert pickle.dumps(buf.state_dict()) == pickle.dumps(restore(buf, capacity_counts="env").state_dict())
    with pytest.raises(ValueError, match="counted as 'all'"):
        restore(buf, capacity_counts="all")  # the same state holds 72 > 40 counting copies
    with pytest.raises(ValueError, match="capacity_counts"):
        ReplayBuffer(capacity_counts="her")


def restore(buf: ReplayBuffer, **kwargs: object) -> ReplayBuffer:
    out = ReplayBuffer(capacity=buf.capacity, n_step=3, gamma=0.9, her=True, her_strategy="uniform", **kwargs)  # type: ignore[arg-type]
    out.load_state_dict(buf.state_dict())
    return out


def test_episode_larger_than_capacity_is_an_error() -> None:
    buf = ReplayBuffer(capacity=5)
    with pytest.raises(ValueError, match="capacity"):
        buf.add_episode(make_episode("e0", [0.0] * 6))


@pytest.mark.parametrize("how", ["pickle", "checkpoint"])
@pytest.mark.parametrize("strategy", ["uniform", "ratio", "prior"])
def test_state_dict_round_trip_gives_identical_batches(strategy: str, how: str, tmp_path) -> None:
    prior = {"grasp": 0.3, "grow": 0.7}
    kwargs = dict(capacity=60, n_step=3, gamma=0.9, her=True, her_strategy=strategy, goal_type_prior=prior)
    buf = ReplayBuffer(**kwargs)  # type: ignore[arg-type]
    rng = np.random.default_rng(3)
    for i in range(12):  # enough to evict
        T = int(rng.integers(3, 9))
        goal = GOAL if i % 2 else OTHER
        buf.add_episode(
            make_episode(f"e{i}", rng.random(T).tolist(), goal=goal, hindsight={G1: 1, OTHER: T - 1})
        )
    if how == "pickle":
        state = pickle.loads(pickle.dumps(buf.state_dict()))
    else:  # the checkpoint format: tensors and plain data, loaded with weights_only=True
        save_checkpoint(tmp_path, {"buffer": buf.state_dict()})
        state = load_checkpoint(tmp_path)["buffer"]
    restored = ReplayBuffer(**kwargs)  # type: ignore[arg-type]
    restored.load_state_dict(state)
    assert len(restored) == len(buf) and restored.her_share() == buf.her_share()
    # Same arrays with the same dtypes, same texts and HER bookkeeping: identical pickles.
    assert pickle.dumps(restored.state_dict()) == pickle.dumps(buf.state_dict())
    ep = make_episode("new", [0.0, 0.0, 1.0], goal=OTHER, hindsight={G1: 0})
    for b in (buf, restored):
        b.add_episode(ep)  # both keep evicting identically after the restore
    a = buf.sample(64, np.random.default_rng(7))
    b = restored.sample(64, np.random.default_rng(7))
    for field in SACBatch._fields:
        x, y = getattr(a, field), getattr(b, field)
        assert (x.tolist() if hasattr(x, "tolist") else x) == (y.tolist() if hasattr(y, "tolist") else y), (
            field
        )


def test_from_config_and_unknown_strategy() -> None:
    assert ReplayBuffer.from_config(BufferConfig(capacity_counts="env"), gamma=0.5).capacity_counts == "env"
    buf = ReplayBuffer.from_config(BufferConfig(capacity=123, n_step=2, her=True), gamma=0.5)
    assert (buf.capacity, buf.n_step, buf.gamma, buf.her) == (123, 2, 0.5, True)
    with pytest.raises(ValueError, match="allowed: uniform, ratio, prior"):
        ReplayBuffer(her_strategy="future")
    with pytest.raises(ValueError, match="goal_type_prior"):
        ReplayBuffer(her_strategy="prior")
