"""``paper-repro prune``: set-aside checkpoint folders go (with sizes listed), live checkpoints
never, and nothing inside the live folder of a stage whose lock is held."""

from __future__ import annotations

from pathlib import Path

from paper_repro.cli import commands as cli
from paper_repro.provenance.lock import stage_lock
from paper_repro.provenance.paths import RunPaths


def _folder(path: Path, size: int) -> Path:
    path.mkdir(parents=True)
    (path / "model.pt").write_bytes(b"x" * size)
    return path


def _run(tmp_path: Path) -> tuple[RunPaths, dict[str, Path]]:
    paths = RunPaths(tmp_path / "tiny")
    ck = paths.root / "checkpoints"
    live = {
        "rm": _folder(ck / "train_rm" / "update-000010", 100),
        "ppo": _folder(ck / "ppo" / "step-000002", 100),
    }
    (ck / "train_rm" / "latest").symlink_to("update-000010")
    aside = {
        "superseded": _folder(ck / "train_rm.superseded-20261205-081500-abcd", 3 * 2**20),
        "completed": _folder(ck / "ppo.completed-20261205-081500-ef01", 2048),
        "corrupt": _folder(ck / "train_rm" / "update-000005.corrupt-20261205-081500", 512),
    }
    return paths, {**{f"live {k}": v for k, v in live.items()}, **aside}


def test_dry_run_lists_with_sizes_and_removes_nothing(tmp_path, capsys):
    paths, folders = _run(tmp_path)
    assert cli.main(["prune", str(paths.root), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would remove    3.0 MiB  checkpoints/train_rm.superseded-" in out
    assert "would remove    2.0 KiB  checkpoints/ppo.completed-" in out
    assert "would remove      512 B  checkpoints/train_rm/update-000005.corrupt-" in out
    assert "would free 3.0 MiB" in out and "live" not in out and "update-000010" not in out
    assert all(p.is_dir() for p in folders.values())


def test_prune_never_touches_live_checkpoints_or_a_running_stage(tmp_path, capsys):
    paths, folders = _run(tmp_path)
    with stage_lock(paths, "train_rm"):  # train_rm is running (a real flock, as a stage takes)
        assert cli.main(["prune", str(paths.root)]) == 0
    out = capsys.readouterr().out
    assert not folders["superseded"].exists() and not folders["completed"].exists()
    assert folders["corrupt"].is_dir()  # inside the running stage's live folder: skipped
    assert "skipped" in out and "stage running" in out and "in use by PID" in out
    assert cli.main(["prune", str(paths.root)]) == 0  # the stage has ended
    assert not folders["corrupt"].exists()
    assert folders["live rm"].is_dir() and folders["live ppo"].is_dir()
    assert (paths.root / "checkpoints" / "train_rm" / "latest").is_symlink()
    assert cli.main(["prune", str(paths.root)]) == 0
    assert "nothing to prune" in capsys.readouterr().out


def test_not_a_run_folder_is_one_line_exit_2(tmp_path, capsys):
    assert cli.main(["prune", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"paper-repro prune: {tmp_path / 'missing'}: no such run folder"
