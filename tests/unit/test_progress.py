"""Progress bars in a log file: plain timed lines, never carriage-return refreshes."""

from __future__ import annotations

import io

from paper_repro.progress import LineWriter, progress


class Log(io.StringIO):
    def isatty(self) -> bool:
        return False


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_gets_plain_lines_with_counts_and_rates(monkeypatch):
    monkeypatch.setenv("PAPER_REPRO_PROGRESS_S", "0")
    log = Log()
    for _ in progress(range(500), desc="scoring", unit="pair", stream=log):
        pass
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert lines[0].startswith("scoring: 0/500 pair")
    assert lines[-1].startswith("scoring: 500/500 pair") and "pair/s" in lines[-1]


def test_log_lines_are_rate_limited(monkeypatch):
    """With the default interval (30 s) a fast loop writes only its first and last lines."""
    monkeypatch.delenv("PAPER_REPRO_PROGRESS_S", raising=False)
    log = Log()
    bar = progress(total=100_000, desc="x", unit="b", stream=log)
    for _ in range(100_000):
        bar.update(1)
    bar.close()
    assert len(log.getvalue().splitlines()) <= 3


def test_postfix_waits_for_the_next_timed_line(monkeypatch):
    """The trainer sets a postfix every update; that must not print a line every update."""
    monkeypatch.delenv("PAPER_REPRO_PROGRESS_S", raising=False)
    log = Log()
    bar = progress(total=1000, desc="train_rm", unit="update", stream=log)
    for k in range(1000):
        bar.update(1)
        bar.set_postfix(loss=f"{1 / (k + 1):.4f}")
    bar.close()
    lines = log.getvalue().splitlines()
    assert len(lines) <= 3 and lines[-1].endswith("loss=0.0010]")


def test_unit_scale_prints_whole_counts(monkeypatch):
    monkeypatch.setenv("PAPER_REPRO_PROGRESS_S", "0")
    log = Log()
    bar = progress(total=384, desc="rewardbench", unit="pair", unit_scale=0.5, stream=log)
    bar.update(384)
    bar.close()
    assert "192/192 pair" in log.getvalue()


def test_terminal_keeps_the_live_bar():
    term = Terminal()
    for _ in progress(range(3), desc="t", stream=term, mininterval=0):
        pass
    assert "\r" in term.getvalue()


def test_line_writer_drops_blank_refreshes():
    out = io.StringIO()
    w = LineWriter(out)
    w.write("\r   ")
    w.write("\rstep 1  ")
    assert out.getvalue() == "step 1\n"
