"""Figure 4 alone: the proportion of each goal type in Playground-Text's train split (from the grammar).

python plots/goal_types.py [OUT_STEM]      # default plots/goal_types -> .png and .pdf
"""

import sys

from sac_glam.analysis.plots import figure_goal_types, goal_type_proportions

if __name__ == "__main__":
    stem = sys.argv[1] if len(sys.argv) > 1 else "plots/goal_types"
    for goal_type, share in goal_type_proportions().items():
        print(f"{goal_type:16s} {100 * share:5.1f}%")
    fig = figure_goal_types()
    for fmt in ("png", "pdf"):
        fig.savefig(f"{stem}.{fmt}", dpi=130)
        print(f"wrote {stem}.{fmt}")
