"""Config files: finding ``lamorel_configs/``, composing a config with hydra, saving and comparing configs.

:func:`load_config` composes ``{directory}/{name}.yaml`` (``defaults:`` lists, ``key=value`` overrides)
and validates it into a :class:`~sac_glam.config.Config`; :func:`from_raw` does the same for plain data
such as a run's saved ``config.yaml``; :func:`save_config`, :func:`to_dict` and :func:`config_diff` go the
other way (a resumed run compares its checkpoint's config with the new one). Kept apart from the
dataclasses (``sac_glam/config/schema.py``), which only declare the keys, and from the checks
(``sac_glam/config/validation.py``); ``sac_glam.config`` re-exports every name here.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf

from sac_glam.config.validation import ConfigError, from_dict, validate

if TYPE_CHECKING:
    from sac_glam.config.schema import Config

DEFAULT_CONFIG = "sac_glam_her_cpu"


def config_dir() -> Path:
    """The configs, as an absolute path: ``$SAC_GLAM_CONFIG_DIR`` when set, else the package's
    ``lamorel_configs`` (a wheel's copy, or in a clone the link to the top-level directory), else
    the source tree's or the working directory's ``lamorel_configs/``."""
    env = os.environ.get("SAC_GLAM_CONFIG_DIR")
    here = Path(__file__).resolve().parents[1]  # sac_glam/
    candidates = [Path(env)] if env else []
    candidates += [here / "lamorel_configs", here.parent / "lamorel_configs", Path.cwd() / "lamorel_configs"]
    return first_existing(
        candidates,
        "config directory",
        "set SAC_GLAM_CONFIG_DIR to a lamorel_configs/ directory (a clone's, or a copy), or pass --config-path",
        directory=True,
    )


def first_existing(candidates: Sequence[Path], what: str, fix: str, *, directory: bool = False) -> Path:
    """The first of ``candidates`` that is a file (a directory with ``directory``), made absolute.

    None is: one :class:`ConfigError` line naming ``what`` was looked for, every place looked, and
    ``fix`` (what to do), e.g. ``no Lamorel RL script found; looked for /a/x.py, /b/x.py: run ...``.
    """
    for path in candidates:
        if path.is_dir() if directory else path.is_file():
            return path.resolve()
    where = ", ".join(map(str, candidates))
    raise ConfigError(f"no {what} found; looked {'in' if directory else 'for'} {where}: {fix}")


def available_configs(directory: Path | None = None) -> list[str]:
    return sorted(p.stem for p in (directory or config_dir()).glob("*.yaml"))


def check_overrides(overrides: Sequence[str]) -> None:
    """Every override is ``key=value`` (a :class:`ConfigError` naming those that are not)."""
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"overrides must look like key=value, got {bad}")


def load_config(
    name: str = DEFAULT_CONFIG, overrides: Sequence[str] = (), directory: str | Path | None = None
) -> Config:
    """Compose ``{directory}/{name}.yaml`` (hydra ``defaults:`` lists work), apply ``key=value``
    overrides, and validate into a :class:`Config`."""
    import yaml
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    path = Path(directory).resolve() if directory else config_dir()
    if not path.is_dir():
        raise ConfigError(f"config directory {path}: no such directory")
    if not (path / f"{name}.yaml").exists():
        raise ConfigError(f"no config {name!r} in {path}; available: {', '.join(available_configs(path))}")
    check_overrides(overrides)
    # A YAML file, a defaults list or an override that hydra / OmegaConf cannot read is a config error
    # too, named by where it is (their own messages span lines: joined into one).
    where = f"{path / name}.yaml"
    try:
        with initialize_config_dir(config_dir=str(path), version_base=None):
            composed = compose(config_name=name)
        plain = OmegaConf.create(OmegaConf.to_container(composed, resolve=True))  # hydra's struct flag off
        where = f"overrides {list(overrides)}"
        # Overrides are merged here rather than by hydra so that a key the YAML leaves at its dataclass
        # default can still be overridden, and a misspelt key gets our error listing the allowed keys.
        merged = OmegaConf.merge(plain, OmegaConf.from_dotlist([o.lstrip("+") for o in overrides]))
        raw = OmegaConf.to_container(merged, resolve=True)
    except (HydraException, OmegaConfBaseException, yaml.YAMLError) as err:
        raise ConfigError(f"{where}: {type(err).__name__}: {' '.join(str(err).split())}") from err
    assert isinstance(raw, dict)
    data = {str(k): v for k, v in raw.items() if k != "defaults"}
    data.setdefault("name", name)
    cfg = from_raw(data)
    if cfg.train.wandb:
        # Checked here, where a user's command starts, rather than in validate(): reading back the
        # config.yaml of a wandb run (probe, report) must not need wandb.
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise ConfigError(WANDB_MISSING) from None
    return cfg


WANDB_MISSING = "train.wandb=true needs wandb: pip install 'sac-glam[wandb]' (or set train.wandb=false)"


def from_raw(raw: dict[str, Any]) -> Config:
    """A validated :class:`Config` from plain data (e.g. a saved ``config.yaml``)."""
    # Imported here: ``sac_glam.config`` re-exports this module's names, so a top-level import of it
    # would be circular (whichever of the two modules is imported first).
    from sac_glam.config.schema import Config

    cfg = from_dict(Config, raw)
    validate(cfg)
    return cfg


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_diff(
    a: dict[str, Any],
    b: dict[str, Any],
    ignore: Sequence[str] = (),
    absent: dict[str, Any] | None = None,
) -> dict[str, tuple[Any, Any]]:
    """Dotted keys whose values differ between two config dicts: ``{key: (a_value, b_value)}``.

    ``absent`` (a config dict) fills the keys ``a`` lacks: a checkpoint written before an option existed
    ran that option's default, since a new option defaults to the behaviour before it."""
    fa, fb = {**flatten(absent or {}), **flatten(a)}, flatten(b)
    return {
        k: (fa.get(k), fb.get(k))
        for k in sorted(set(fa) | set(fb))
        if k not in ignore and fa.get(k) != fb.get(k)
    }


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(OmegaConf.to_yaml(OmegaConf.create(to_dict(cfg))))
