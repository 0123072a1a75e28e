"""``python -m paper_repro.cli``: the ``paper-repro`` command (how tests and torchrun start it)."""

import sys

from . import main

sys.exit(main())
