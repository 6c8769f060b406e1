"""``sac-glam``: utilities. ``sac-glam train`` is ``lamorel-launch`` (training, with or without Lamorel);
``sac-glam eval RUN_DIR`` evaluates what a run trained (``--show``: watch it play one episode);
``sac-glam goals --split train`` lists goals; ``sac-glam bench ...`` measures;
``sac-glam experiment NAME`` runs one of the paper's studies; ``sac-glam plot DIR`` draws its figures;
``sac-glam report DIR`` tabulates it (and exports the committable CSVs and PNGs); ``sac-glam probe``
checks by behaviour cloning whether a model can learn the task at all; ``sac-glam make-model`` writes a
paper-shaped model directory for ``model.name=DIR`` without downloads; ``sac-glam pretrain`` text-pretrains
a tiny preset once and writes its weights where runs look for them; ``sac-glam wheelhouse`` downloads
the wheels an offline GPU node lacks."""

from __future__ import annotations

import argparse
import importlib
import sys

from sac_glam import __version__
from sac_glam.helptext import plain

BENCHMARKS = {
    "env": "sac_glam.benchmarks.env",
    "scoring": "sac_glam.benchmarks.scoring",
    "buffer": "sac_glam.benchmarks.buffer_memory",
    "train": "sac_glam.benchmarks.train",
    "scaling": "sac_glam.benchmarks.scaling",
    "soak": "sac_glam.benchmarks.soak",
    "paper": "sac_glam.benchmarks.paper",
    "learning": "sac_glam.benchmarks.learning",
    "actor-critic": "sac_glam.benchmarks.actor_critic",
    "heldout": "sac_glam.benchmarks.heldout",
}

# These parse their own arguments (``sac-glam experiment -h``, ...).
SELF_PARSING = {
    "train": "sac_glam.cli.launch",  # lamorel-launch under the name users without Lamorel look for
    "eval": "sac_glam.run.trained",
    "experiment": "sac_glam.cli.experiments",
    "plot": "sac_glam.analysis.plots",
    "report": "sac_glam.analysis.report",
    "probe": "sac_glam.analysis.probe",
    "make-model": "sac_glam.llm.make_model",
    "pretrain": "sac_glam.pretrain",
    "wheelhouse": "sac_glam.cli.wheelhouse",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="sac-glam", description=plain(__doc__))
    parser.add_argument("--version", action="version", version=f"sac-glam {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "train", add_help=False, help="train: the same command as lamorel-launch (its --help lists the keys)"
    )
    p_goals = sub.add_parser("goals", help="print the goals of a split, one per line")
    p_goals.add_argument("--split", default="train", choices=["train", "test", "simple-train", "simple-test"])
    p_bench = sub.add_parser("bench", help="run a benchmark and print its table (extra args go to it)")
    p_bench.add_argument("name", choices=sorted(BENCHMARKS))
    sub.add_parser(
        "experiment", add_help=False, help="run or submit an experiment of experiments/experiments.yaml"
    )
    sub.add_parser("plot", add_help=False, help="plot an experiment's results directory (PNG and PDF)")
    sub.add_parser(
        "report", add_help=False, help="tabulate an experiment's results (markdown, JSON, exports)"
    )
    sub.add_parser(
        "probe", add_help=False, help="behaviour-clone the expert: can the LLM policy learn the task?"
    )
    sub.add_parser(
        "make-model",
        add_help=False,
        help="write a paper-shaped random model + trained tokenizer (no download)",
    )
    sub.add_parser("pretrain", add_help=False, help="text-pretrain a tiny preset once and write its weights")
    sub.add_parser("eval", add_help=False, help="evaluate a run's agent by goal type (--show: watch it)")
    sub.add_parser(
        "wheelhouse",
        add_help=False,
        help="download the wheels an offline node lacks (pip install --no-index)",
    )
    if argv[:1] == ["train"]:  # lamorel-launch, with its usage and errors under the name typed
        from sac_glam.cli import launch

        return launch.main(argv[1:], prog="sac-glam train")
    if argv[:1] and argv[0] in SELF_PARSING:
        module = importlib.import_module(SELF_PARSING[argv[0]])
        return int(module.main(argv[1:]))
    if argv[:1] == ["bench"] and len(argv) > 1 and argv[1] in BENCHMARKS:  # its own -h, flags and overrides
        importlib.import_module(BENCHMARKS[argv[1]]).main(argv[2:])
        return 0
    # Left for argparse: ``goals``, and errors/help (a ``bench`` with a valid name was dispatched above).
    args = parser.parse_args(argv)
    from sac_glam.envs.goals import goals

    sys.stdout.write("".join(g.text + "\n" for g in goals(args.split)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
