"""The evaluation protocol: sampling from pi, a fixed quota of episodes per environment, seeded episodes."""

import zlib

import numpy as np
import pytest
import torch

from sac_glam.backends.base import ActOutput
from sac_glam.run.configs import load_config
from sac_glam.run.evaluation import EpisodeHook, evaluate, play_episodes, sample_actions, success_by_type


class ByPrompt:
    """A policy stand-in whose pi depends on each prompt's text: reading another prompt changes the episode."""

    def act(self, prompts, actions):
        width = max(map(len, actions))
        mask_BA = torch.tensor([[j < len(a) for j in range(width)] for a in actions])
        logits_BA = torch.tensor(
            [[zlib.crc32(f"{p}|{j}".encode()) % 7 for j in range(width)] for p in prompts]
        )
        log_pi_BA = torch.log_softmax(logits_BA.float().masked_fill(~mask_BA, -torch.inf), -1)
        return ActOutput(log_pi_BA.masked_fill(~mask_BA, 0.0), mask_BA, None)


class EndsByEnv(EpisodeHook):
    """Every end :func:`play_episodes` reports, by environment, with whether it was counted."""

    def started(self, envs):
        self.ends = [[] for _ in envs.envs]

    def ended(self, env, end, counted):
        self.ends[env].append((end, counted))


def test_sampling_follows_pi_and_never_picks_a_padded_action():
    log_pi_BA = torch.log(torch.tensor([[0.2, 0.8, 0.0], [0.5, 0.25, 0.25]]))
    act = ActOutput(log_pi_BA.nan_to_num(neginf=0.0), torch.tensor([[True, True, False], [True] * 3]), None)
    ids = np.stack([sample_actions(act, np.random.default_rng(s)) for s in range(4000)])
    assert np.abs((ids[:, 0] == 1).mean() - 0.8) < 0.03 and (ids[:, 0] < 2).all()  # log 0 -> 0 is masked
    assert np.abs(np.bincount(ids[:, 1], minlength=3) / 4000 - [0.5, 0.25, 0.25]).max() < 0.03
    assert sample_actions(act, np.random.default_rng(0), greedy=True).tolist() == [1, 0]


def test_each_environment_plays_its_quota_and_the_seed_fixes_the_episodes():
    cfg = load_config("sac_glam_her_cpu", ["env.n_envs=4", "train.eval_episodes=7"])
    hook = EndsByEnv()
    ends = play_episodes(ByPrompt(), cfg.env, "train", 7, 5, greedy=False, hook=hook)
    assert [sum(c for _, c in env_ends) for env_ends in hook.ends] == [2, 2, 2, 2]  # 7 rounded up per env
    for env_ends in hook.ends:  # an env's episodes past its quota are not counted, the earlier ones are
        assert [c for _, c in env_ends] == [True, True] + [False] * (len(env_ends) - 2)
    assert sorted(map(id, ends)) == sorted(id(e) for env_ends in hook.ends for e, c in env_ends if c)
    again = play_episodes(ByPrompt(), cfg.env, "train", 7, 5, greedy=False)
    assert again == ends  # the hook watches, it changes nothing
    assert play_episodes(ByPrompt(), cfg.env, "train", 7, 6, greedy=False) != ends
    records = [(e.goal_type, float(e.success), e.length) for e in ends]
    assert evaluate(ByPrompt(), cfg, "train", 5) == success_by_type(records)
    assert (
        0.0 < success_by_type(records)["success_rate"] < 1.0
    )  # not a constant: the pins above mean something


@pytest.mark.parametrize("greedy", [False, True])
def test_the_policy_reads_the_prompts_the_hook_shows(greedy):
    class Shows(EpisodeHook):
        def prompts(self, obs):
            return [p.replace("Goal: ", "Goal: not ") for p in obs.prompts]

    cfg = load_config("sac_glam_her_cpu", ["env.n_envs=4"])
    plain = play_episodes(ByPrompt(), cfg.env, "test", 16, 3, greedy)
    shown = play_episodes(ByPrompt(), cfg.env, "test", 16, 3, greedy, Shows())
    assert [e.length for e in plain] != [e.length for e in shown]
