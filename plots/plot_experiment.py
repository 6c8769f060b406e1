"""Every figure of one experiment directory (Figures 2, 4, 5-9): a thin wrapper of ``sac-glam plot``.

python plots/plot_experiment.py results/fig2-cpu [--out DIR] [--formats png pdf]
"""

import sys

from sac_glam.analysis.plots import main

if __name__ == "__main__":
    sys.exit(main())
