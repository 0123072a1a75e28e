"""The ``paper-repro`` command line: one subcommand per stage, their help texts and the
runner every stage shares. ``paper_repro.cli:main`` is the console script."""

from .commands import main

__all__ = ["main"]
