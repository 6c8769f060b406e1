"""What runs say, read from their files: ``sac-glam report`` (``report.py``; the numbers over seeds in
``stats.py``, the markdown in ``tables.py``, IQM intervals and P(X > Y) in ``intervals.py``), the paper's
figures (``plots.py``) and the critic's probe against exact Q* (``probe.py``)."""
