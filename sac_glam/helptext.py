"""Command-line help from module docstrings, without their reStructuredText markup.

The docstrings are written for readers of the code (``literal``, :func:`role` references, *emphasis*);
a terminal shows ``--help`` as plain text, so each command's parser is given ``plain(__doc__)``.
"""

from __future__ import annotations

import re

# One pass, alternatives in order, so that a '*' inside a literal (``seed*/``) is never read as emphasis.
# Emphasis follows RST's inline rules: it opens after a space or bracket, and closes before one.
_MARKUP = re.compile(
    r"``(?P<literal>.+?)``"
    r"|:[a-z]+:`(?P<role>[^`]+)`"
    r"|(?<![\w*])\*\*(?P<strong>\S(?:.*?\S)?)\*\*(?![\w*])"
    r"|(?<![\w*])\*(?P<emphasis>[^\s*](?:[^*]*?[^\s*])?)\*(?![\w*])",
    re.DOTALL,
)


def _role_text(target: str) -> str:
    """What Sphinx shows for a role: ``title <target>`` -> title; ``~a.b.C`` -> C; else the target."""
    titled = re.fullmatch(r"(.+?)\s*<[^>]+>", target, re.DOTALL)
    if titled:
        return titled.group(1)
    if target.startswith("~"):
        return target[1:].rsplit(".", 1)[-1]
    return target


def _plain(match: re.Match[str]) -> str:
    if match.group("role") is not None:
        return _role_text(match.group("role"))
    return next(g for g in (match.group("literal"), match.group("strong"), match.group("emphasis")) if g)


def plain(text: str | None) -> str:
    """``text`` with its inline markup removed; worked example:
    ``plain(":func:`~sac_glam.run.train.train` runs ``(config, seed)``, *once*")``
    -> ``"train runs (config, seed), once"``."""
    return _MARKUP.sub(_plain, text or "")
