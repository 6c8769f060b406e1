"""The goal grammar and the IMAGINE split: counts from the paper and ``docs/environment.md``, parsing round trips."""

from __future__ import annotations

from collections import Counter

import pytest

from sac_glam.envs.goals import GOAL_TYPES, goals, is_test_text, parse_goal, simple_goals


def test_train_counts_match_the_paper() -> None:
    train = goals("train")
    assert len(train) == 8470  # paper Section 3
    assert len(simple_goals("train")) == 182
    assert Counter(g.goal_type for g in train) == {
        "grasp": 136,
        "grow": 46,
        "grow_then_grasp": 6218,
        "grow_then_grow": 2070,
    }


def test_test_counts() -> None:
    assert len(simple_goals("test")) == 64
    assert len(goals("test")) == 3145
    assert len(goals("test", sequential=False)) == 64
    assert len(goals("simple-train")) == 182


def test_splits_are_disjoint_and_follow_the_markers() -> None:
    train = {g.text for g in goals("train")}
    test = {g.text for g in goals("test")}
    assert not train & test
    assert not any(is_test_text(t) for t in train)
    assert all(is_test_text(t) for t in test)
    # Growing plants is test-only, except through "Grow any {colour} thing".
    assert "Grow red cactus" in test and "Grow any red thing" in train


@pytest.mark.parametrize("split", ["train", "test"])
def test_every_goal_parses_back(split: str) -> None:
    for g in goals(split):  # type: ignore[arg-type]
        assert parse_goal(g.text) == g
        assert g.goal_type in GOAL_TYPES


def test_sequential_parts_never_share_their_last_two_words() -> None:
    texts = {g.text for g in goals("train")}
    assert "Grow red dog then grasp red dog" not in texts
    assert "Grow red dog then grasp any dog" in texts
    for g in goals("train"):
        if g.second is not None:
            assert g.first.verb == "grow"
            assert g.first.last_two_words != g.second.last_two_words


def test_unknown_goal_says_how_to_list_goals() -> None:
    with pytest.raises(ValueError, match=r"sac-glam goals --split"):
        parse_goal("Grasp purple unicorn")
