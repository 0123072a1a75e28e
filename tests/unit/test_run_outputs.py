"""The run-folder comparison behind the layout test (tests/run_outputs.py): it masks only
timings, dates, code versions and the run's own path, and reports every other difference."""

from __future__ import annotations

import json
from pathlib import Path

from run_outputs import differences


def _run(
    root: Path, *, code: str = "0123456789abcdef", seconds: float = 1.5, loss: float = 0.69
) -> Path:
    run = root / "results" / "tiny"
    (run / "train_rm").mkdir(parents=True)
    (run / "train_rm" / "identity.json").write_text(json.dumps({"stage": "train_rm", "code": code}))
    (run / "train_rm" / "summary.json").write_text(
        json.dumps({"final_loss": loss, "wall_seconds": seconds, "out": str(run / "train_rm")})
    )
    (run / "train_rm" / "metrics.jsonl").write_text(
        json.dumps({"step": 1, "loss": loss, "time": seconds}) + "\n"
    )
    (run / "train_rm" / "final.safetensors").write_bytes(b"\x00\x01weights")
    (run / "report").mkdir()
    (run / "report" / "report.md").write_text(
        f"Trained in {seconds} s on 2026-12-06 01:02:03 by code {code}; loss {loss}\n"
    )
    (run / "logs").mkdir()
    (run / "logs" / "train_rm.log").write_text(f"{seconds}\n")
    return run


def test_same_results_with_other_timings_paths_and_code_versions(tmp_path):
    a = _run(tmp_path / "a")
    b = _run(tmp_path / "b", code="fedcba9876543210", seconds=7.25)
    assert differences(a, b) == []


def test_a_changed_value_weight_or_file_set_is_reported(tmp_path):
    a = _run(tmp_path / "a")
    b = _run(tmp_path / "b", loss=0.7)
    assert differences(a, b) == [
        "differs: report/report.md",
        "differs: train_rm/metrics.jsonl",
        "differs: train_rm/summary.json",
    ]
    c = _run(tmp_path / "c")
    (c / "train_rm" / "final.safetensors").write_bytes(b"\x00\x02weights")
    (c / "train_rm" / "extra.json").write_text("{}")
    assert differences(a, c) == [
        f"only in {c}: train_rm/extra.json",
        "differs: train_rm/final.safetensors",
    ]
