"""What ``lamorel-launch`` shows about the config: every key with its type, value and docstring
(``--keys``), the key names for ``--help``, and the ``-m`` sweep of comma-separated override values.

The docstrings are the string literals under the fields of ``sac_glam/config/schema.py`` (the convention of
CleanRL's ``Args``); they are read from the dataclasses' source, which a wheel carries too.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import textwrap
from collections.abc import Iterator, Sequence
from typing import Any

from sac_glam.config import Config, ConfigError, flatten, to_dict


@dataclasses.dataclass(frozen=True)
class KeyDoc:
    """One config key: ``train.total_steps``, its annotation, the dataclass default and its docstring."""

    key: str
    type: str
    default: Any
    doc: str


def field_docs(cls: type) -> dict[str, str]:
    """``{field: docstring}`` of a dataclass: the string literal right under each annotated field."""
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0]
    assert isinstance(body, ast.ClassDef)
    docs: dict[str, str] = {}
    for node, after in itertools.pairwise(body.body):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)):  # fmt: skip
            docs[node.target.id] = inspect.cleandoc(after.value.value)
    return docs


def key_docs(cls: type = Config, prefix: str = "") -> Iterator[KeyDoc]:
    """Every leaf key of ``cls``, depth first in declaration order (``env.n_envs``, ..., ``model.tiny.d_model``)."""
    docs = field_docs(cls)
    defaults = cls()
    for f in dataclasses.fields(cls):
        value = getattr(defaults, f.name)
        if dataclasses.is_dataclass(value):
            yield from key_docs(type(value), f"{prefix}{f.name}.")
        else:
            yield KeyDoc(f"{prefix}{f.name}", str(f.type), value, docs.get(f.name, ""))


def key_names_help(width: int = 100) -> str:
    """The keys by section for ``lamorel-launch --help``: ``train: algo, backend, total_steps, ...``."""
    sections: dict[str, list[str]] = {}
    for k in key_docs():
        section, _, rest = k.key.rpartition(".")
        sections.setdefault(section or "(top level)", []).append(rest)
    lines = [f"{s}: {', '.join(names)}" for s, names in sections.items()]
    return "\n".join(textwrap.fill(line, width, subsequent_indent="    ") for line in lines)


def describe_keys(cfg: Config, prefix: str = "", width: int = 100) -> str:
    """``--keys``: each key as ``key: type = value`` (this config's value, and the dataclass default when
    it differs), then its docstring indented. ``prefix`` keeps the keys starting with it (``sac.``)."""
    values = flatten(to_dict(cfg))
    chosen = [k for k in key_docs() if k.key.startswith(prefix)]
    if not chosen:
        sections = sorted({k.key.split(".")[0] for k in key_docs()})
        raise ConfigError(f"--keys {prefix}: no key starts with it; sections: {', '.join(sections)}")
    out = []
    for k in chosen:
        value = values.get(k.key, k.default)
        default = "" if value == k.default else f"  (default {k.default!r})"
        out.append(f"{k.key}: {k.type} = {value!r}{default}")
        if k.doc:
            out.append(
                textwrap.fill(" ".join(k.doc.split()), width, initial_indent="    ", subsequent_indent="    ")
            )
    return "\n".join(out) + "\n"


def split_sweep(value: str) -> list[str]:
    """The values of a ``-m`` sweep ``0,1,2`` (hydra's syntax): split at the commas outside brackets and
    quotes, so that a list stays one value: ``[grasp,grow],[grow]`` -> ``['[grasp,grow]', '[grow]']``."""
    parts, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(value):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(value[start:i])
            start = i + 1
    return [*parts, value[start:]]


def expand_sweep(overrides: Sequence[str]) -> list[list[str]]:
    """Every combination of the swept overrides, the last key varying fastest (hydra's basic sweeper):
    ``[train.seed=0,1, sac.tau=0.1,0.2]`` -> 4 lists, ``[train.seed=0, sac.tau=0.1]`` first."""
    choices = []
    for o in overrides:
        key, sep, value = o.partition("=")
        choices.append([f"{key}{sep}{v}" for v in split_sweep(value)] if sep else [o])
    return [list(c) for c in itertools.product(*choices)]
