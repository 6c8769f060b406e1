"""The command line: ``sac-glam`` (``commands.py``), ``lamorel-launch`` (``launch.py``, with the config
keys' help in ``keys.py`` and Lamorel's launcher watched by ``lamorel_watch.py``), ``sac-glam experiment``
(``experiments.py``) and ``sac-glam wheelhouse`` (``wheelhouse.py``)."""

from sac_glam.cli.commands import main

__all__ = ["main"]
