"""One training run: its config checked against the environment and the model (``configs.py``), the
agent, buffer and learner built from it (``factory.py``, ``learners.py``), the loop (``train.py``) with
its evaluation episodes (``evaluation.py``), metrics and progress bar (``logging.py``), checkpoints
(``checkpoint.py``) and end-of-run curve (``plot.py``), and a finished run loaded back (``trained.py``).
"""
