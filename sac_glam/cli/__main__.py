"""``python -m sac_glam.cli ...`` is ``sac-glam ...``."""

import sys

from sac_glam.cli.commands import main

sys.exit(main())
