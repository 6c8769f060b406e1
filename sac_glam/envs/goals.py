"""Playground-Text goal grammar and the IMAGINE train/test split.

Implements ``docs/environment.md`` ("Goals"):

- Grasp goals: ``Grasp {colour} {name}``, ``Grasp any {colour} thing``, ``Grasp any {name}``.
- Grow goals: the same forms, restricted to living things (no furniture/supply types or names).
- A goal is a *test* goal when its text contains one of :data:`TEST_MARKERS`.
- Sequential goals: ``{A} then {b}`` with A a simple Grow goal, b a simple goal of the same split
  (lower-case first letter) whose last two words differ from A's.

Counts (asserted in tests): 182 simple train goals (136 Grasp, 46 Grow), 64 simple test goals,
8,288 sequential train goals, hence the paper's 8,470 train goals.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

COLOURS: tuple[str, ...] = ("red", "blue", "green")

CATEGORY_TYPES: dict[str, tuple[str, ...]] = {
    "furniture": ("door", "chair", "desk", "lamp", "table", "cupboard", "sink", "window", "sofa", "carpet"),
    "plant": ("cactus", "carnivorous", "flower", "tree", "bush", "grass", "algae", "tea", "rose", "bonsai"),
    "animal": ("dog", "cat", "chameleon", "human", "fly", "parrot", "mouse", "lion", "pig", "cow"),
    "supply": ("food", "water"),
}
TYPE_CATEGORY: dict[str, str] = {t: c for c, ts in CATEGORY_TYPES.items() for t in ts}
ALL_TYPES: tuple[str, ...] = tuple(TYPE_CATEGORY)
LIVING_CATEGORIES: frozenset[str] = frozenset({"plant", "animal"})
#: The five category words a goal may use as its name.
CATEGORY_NAMES: tuple[str, ...] = ("animal", "plant", "furniture", "supply", "living_thing")
#: Every name a goal may use: a type or a category word.
NAMES: tuple[str, ...] = ALL_TYPES + CATEGORY_NAMES

Verb = Literal["grasp", "grow"]
GoalType = Literal["grasp", "grow", "grow_then_grasp", "grow_then_grow"]
GOAL_TYPES: tuple[GoalType, ...] = ("grasp", "grow", "grow_then_grasp", "grow_then_grow")
Split = Literal["train", "test", "simple-train", "simple-test"]
SPLITS: tuple[str, ...] = ("train", "test", "simple-train", "simple-test")

ANY = "any"
THING = "thing"


def _test_markers() -> tuple[str, ...]:
    markers = ["red tree", "green dog", "blue door", "flower"]
    for c in (*COLOURS, ANY):
        markers += [f"Grasp {c} animal", f"Grasp {c} fly"]
        markers += [f"Grow {c} {p}" for p in (*CATEGORY_TYPES["plant"], "plant", "living_thing")]
    return tuple(markers)


#: A goal whose text contains any of these substrings belongs to the test split (IMAGINE's split).
TEST_MARKERS: tuple[str, ...] = _test_markers()


def is_test_text(text: str) -> bool:
    """Whether a goal text belongs to the held-out test split."""
    return any(m in text for m in TEST_MARKERS)


@dataclass(frozen=True)
class Obj:
    """An object of the scene: a (colour, type) pair such as ``green mouse``."""

    colour: str
    type: str

    @property
    def category(self) -> str:
        return TYPE_CATEGORY[self.type]

    @property
    def living(self) -> bool:
        return self.category in LIVING_CATEGORIES

    def __str__(self) -> str:
        return f"{self.colour} {self.type}"


ALL_OBJECTS: tuple[Obj, ...] = tuple(Obj(c, t) for t in ALL_TYPES for c in COLOURS)


def name_matches(name: str, obj: Obj) -> bool:
    """Whether a goal name (type, category word or ``thing``) describes ``obj``."""
    if name == THING or name == obj.type or name == obj.category:
        return True
    return name == "living_thing" and obj.living


@dataclass(frozen=True)
class SimpleGoal:
    """``{Verb} {colour} {name}``; ``colour`` is ``any`` or a colour, ``name`` may be ``thing``."""

    verb: Verb
    colour: str
    name: str

    def matches(self, obj: Obj) -> bool:
        """Whether grasping (growing) ``obj`` achieves this goal."""
        if self.verb == "grow" and not obj.living:
            return False
        return (self.colour == ANY or self.colour == obj.colour) and name_matches(self.name, obj)

    @property
    def text(self) -> str:
        verb = self.verb.capitalize()
        if self.name == THING:
            return f"{verb} any {self.colour} thing"
        return f"{verb} {self.colour} {self.name}"

    @property
    def last_two_words(self) -> tuple[str, str]:
        words = self.text.split()
        return words[-2], words[-1]


@dataclass(frozen=True)
class Goal:
    """A simple goal (``second is None``) or a sequential goal ``{first} then {second}``."""

    first: SimpleGoal
    second: SimpleGoal | None = None

    @property
    def text(self) -> str:
        if self.second is None:
            return self.first.text
        b = self.second.text
        return f"{self.first.text} then {b[0].lower()}{b[1:]}"

    @property
    def parts(self) -> tuple[SimpleGoal, ...]:
        return (self.first,) if self.second is None else (self.first, self.second)

    @property
    def goal_type(self) -> GoalType:
        if self.second is None:
            return self.first.verb
        return "grow_then_grasp" if self.second.verb == "grasp" else "grow_then_grow"

    def __str__(self) -> str:
        return self.text


def _simple_goals(verb: Verb) -> list[SimpleGoal]:
    if verb == "grasp":
        names: tuple[str, ...] = NAMES
    else:
        names = tuple(n for n in NAMES if n not in ("furniture", "supply"))
        names = tuple(n for n in names if n not in ALL_TYPES or TYPE_CATEGORY[n] in LIVING_CATEGORIES)
    goals = [SimpleGoal(verb, c, n) for c in COLOURS for n in names]
    goals += [SimpleGoal(verb, c, THING) for c in COLOURS]
    goals += [SimpleGoal(verb, ANY, n) for n in names]
    return goals


@functools.cache
def simple_goals(split: Literal["train", "test"]) -> tuple[Goal, ...]:
    """The simple goals of a split, Grasp goals first, in a fixed order."""
    verbs: tuple[Verb, ...] = ("grasp", "grow")
    goals = [Goal(g) for verb in verbs for g in _simple_goals(verb)]
    return tuple(g for g in goals if is_test_text(g.text) == (split == "test"))


@functools.cache
def sequential_goals(split: Literal["train", "test"]) -> tuple[Goal, ...]:
    """``{A} then {b}``: A a simple Grow goal, b any simple goal of the split, last two words differ."""
    simple = simple_goals(split)
    grows = [g.first for g in simple if g.first.verb == "grow"]
    return tuple(
        Goal(a, b.first) for a in grows for b in simple if b.first.last_two_words != a.last_two_words
    )


@functools.cache
def goals(split: Split, sequential: bool = True) -> tuple[Goal, ...]:
    """Every goal of a split; ``simple-*`` splits (or ``sequential=False``) omit sequential goals."""
    base: Literal["train", "test"] = "test" if split in ("test", "simple-test") else "train"
    if split not in SPLITS:
        raise ValueError(f"unknown goal split {split!r}; allowed: {', '.join(SPLITS)}")
    out = simple_goals(base)
    if sequential and not split.startswith("simple"):
        out = out + sequential_goals(base)
    return out


@functools.cache
def _goal_index() -> dict[str, Goal]:
    splits: tuple[Split, ...] = ("train", "test")
    return {g.text: g for split in splits for g in goals(split)}


def parse_goal(text: str) -> Goal:
    """The :class:`Goal` of a goal text; raises ``ValueError`` for a text outside the grammar."""
    goal = _goal_index().get(text.strip())
    if goal is None:
        raise ValueError(
            f"unknown goal {text!r}: not in Playground-Text's grammar. "
            "List the valid goals with `sac-glam goals --split train|test|simple-train|simple-test`."
        )
    return goal


def vocabulary() -> list[str]:
    """Every word the environment can ever show: goals, objects, actions, the prompt template.

    Punctuation (``:`` and ``,``) counts as words. Used by the offline word-level tokenizer.
    """
    words: set[str] = {":", ",", "Goal", "You", "see", "are", "on", "holding", "have", "grown"}
    words |= {"nothing", "Action", "Go", "to", "Grasp", "Release", "then", "grasp", "grow", "Grow"}
    words |= {ANY, THING, *COLOURS, *NAMES}
    return sorted(words)


#: The environment's full action vocabulary (every action any scene can admit), in a fixed order.
#: The ``prompt``-input critic of Appendix B has one output per entry.
ALL_ACTIONS: tuple[str, ...] = (*(f"Go to {o}" for o in ALL_OBJECTS), "Grasp", "Release")
