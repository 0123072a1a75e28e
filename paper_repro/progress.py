"""Progress bars that stay readable in a log file.

On a terminal: an ordinary tqdm bar. Otherwise (a stage log under Snakemake or Slurm): one plain
line at most every ``PAPER_REPRO_PROGRESS_S`` seconds (default 30) with count, elapsed time and
rate, instead of thousands of carriage-return updates on one line that ``cat`` shows as garbage.
Every progress bar in the package comes from ``progress()``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any, TextIO

DEFAULT_INTERVAL_S = 30.0
PLAIN_FORMAT = "{desc}: {n:,.0f}/{total:,.0f} {unit} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


def interactive(stream: TextIO | None = None) -> bool:
    stream = stream or sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


class LineWriter:
    """A file for tqdm that turns each carriage-return refresh into one line of its own."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").strip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


def interval_s() -> float:
    raw = os.environ.get("PAPER_REPRO_PROGRESS_S", "")
    try:
        return float(raw) if raw else DEFAULT_INTERVAL_S
    except ValueError:
        return DEFAULT_INTERVAL_S


def progress(iterable: Iterable | None = None, *, stream: TextIO | None = None, **kwargs: Any):
    """``tqdm(iterable, **kwargs)`` for a terminal; plain timed lines otherwise."""
    from tqdm import tqdm

    stream = stream or sys.stderr
    if interactive(stream):
        return tqdm(iterable, file=stream, dynamic_ncols=True, **kwargs)
    kwargs.pop("dynamic_ncols", None)
    kwargs.pop("leave", None)  # a finished bar stays as its last line

    class PlainBar(tqdm):
        """Postfix and description wait for the next timed line instead of forcing one."""

        def set_postfix(self, ordered_dict=None, refresh=False, **kwargs):
            super().set_postfix(ordered_dict, refresh=False, **kwargs)

        def set_description(self, desc=None, refresh=False):
            super().set_description(desc, refresh=False)

    return PlainBar(
        iterable,
        file=LineWriter(stream),
        mininterval=interval_s(),
        maxinterval=max(interval_s(), 10.0),
        bar_format=PLAIN_FORMAT,
        ascii=True,
        **kwargs,
    )


def quiet_library_bars() -> None:
    """Off a terminal, switch off the download and weight-loading bars of huggingface_hub and
    transformers (their own tqdm, one carriage-return line per file or shard)."""
    if interactive():
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency
        pass
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass
