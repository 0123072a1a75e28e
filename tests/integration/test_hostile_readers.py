"""Every reader (shipped fixture, local file, hub download) delivers hostile rows to the same
validation: download_data copies them untouched, prepare_data counts each by reason with its
first line in data_report.json and never crashes. Row counts of fixtures and known hub splits are
enforced. RewardBench rows count the same way in both eval input modes."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil

import pytest
from hostile import FILES, expected_report, file_bytes, write_files
from hubfake import COMMIT, make_cache
from manifests import remanifest

from paper_repro.cli.commands import main
from paper_repro.config import load_config
from paper_repro.provenance.io import read_json
from paper_repro.provenance.paths import RunPaths
from paper_repro.stages import download_data, prepare_data

TINY = ["model.tiny.sft_steps=60", "rm.epochs=2"]  # = tests/conftest.py TINY_TEST_OVERRIDES
SPLITS = {"preference": "prefs", "rewardbench": "filtered", "ppo_prompts": "prompts"}


def new_run(tiny_run, root) -> RunPaths:
    paths = RunPaths(root)
    shutil.copytree(tiny_run.stage_dir("download_base"), paths.stage_dir("download_base"))
    return paths


def fixture_reader(tmp_path, monkeypatch) -> list[str]:
    """The shipped-fixture code path on a fixture folder holding the hostile files."""
    from paper_repro import fixtures
    from paper_repro.fixtures import tiny

    folder = tmp_path / "fixtures"
    folder.mkdir()
    targets = {**{FILES[n]: n for n in FILES}, "preference_heldout.jsonl": "preference"}
    for fname, name in targets.items():
        (folder / fname).write_bytes(file_bytes(name))
        monkeypatch.setitem(fixtures.FIXTURE_ROWS, fname, file_bytes(name).count(b"\n"))
    monkeypatch.setattr(tiny, "FIXTURE_DIR", folder)
    return []


def local_reader(tmp_path, monkeypatch) -> list[str]:
    files = write_files(tmp_path / "local")
    return ["data.source=local"] + [f"data.{n}.local_path={p}" for n, p in files.items()]


def offline_hub(tmp_path, monkeypatch, repos: dict[str, tuple[str, str, bytes]]) -> list[str]:
    """{name: (repo id, split, data file bytes)} as dataset repos in an HF cache read offline
    (the layout of the hub datasets: data/<split>-00000-of-00001.<jsonl|parquet>); returns the
    config overrides that download them."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    overrides = ["data.source=hub"]
    for name, (repo_id, split, data) in repos.items():
        suffix = "parquet" if data.startswith(b"PAR1") else "jsonl"
        files = {"README.md": b"# card\n", f"data/{split}-00000-of-00001.{suffix}": data}
        make_cache(cache, repo_id, files, repo_type="dataset")
        overrides += [f"data.{name}.hub_id={repo_id}", f"data.{name}.split={split}"]
        overrides.append(f"data.{name}.revision={COMMIT}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return overrides


def hub_reader(tmp_path, monkeypatch) -> list[str]:
    repos = {n: (f"org/{n}", split, file_bytes(n)) for n, split in SPLITS.items()}
    return offline_hub(tmp_path, monkeypatch, repos)


READERS = {"fixture": fixture_reader, "local": local_reader, "hub": hub_reader}


@pytest.mark.parametrize(
    "reader",
    [
        pytest.param(r, marks=pytest.mark.hardening("4", f"every hostile row kind, {r} reader"))
        for r in READERS
    ],
)
def test_hostile_rows_counted_through_each_reader(reader, tiny_run, tmp_path, monkeypatch):
    cfg = load_config("tiny", TINY + READERS[reader](tmp_path, monkeypatch))
    paths = new_run(tiny_run, tmp_path / "run")
    assert download_data.run(cfg, paths) == 0
    for name in FILES:  # copied byte for byte: nothing lost or reinterpreted on the way
        assert paths.raw_data(name).read_bytes() == file_bytes(name)
    assert prepare_data.run(cfg, paths) == 0
    report = read_json(paths.data_report)
    for name in FILES:
        got, want = report[name], expected_report(name)
        assert {k: v for k, v in got["dropped_by_reason"].items() if v} == want["dropped_by_reason"]
        assert {k: v for k, v in got["kept_but_flagged"].items() if v} == want["kept_but_flagged"]
        for key in ("total", "kept", "first_dropped_line", "first_flagged_line"):
            assert got[key] == want[key], (name, key)


@pytest.mark.hardening(
    "4", "RewardBench parquet with null id/prompt/subset (hub reader, row by row)"
)
def test_hub_parquet_rows_are_read_one_by_one(tiny_run, tmp_path, monkeypatch):
    """reward-bench ships parquet: its rows are converted one by one, so null fields (all a typed
    parquet column can hold wrong) are counted per row in prepare_data."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from paper_repro.fixtures.tiny import FIXTURE_DIR

    rows = [json.loads(x) for x in (FIXTURE_DIR / FILES["rewardbench"]).read_text().splitlines()]
    rows[3]["id"], rows[5]["prompt"], rows[7]["subset"] = None, None, None
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    repos = {n: (f"org/{n}", split, file_bytes(n)) for n, split in SPLITS.items()}
    repos["rewardbench"] = ("org/bench", "filtered", buf.getvalue())
    overrides = offline_hub(tmp_path, monkeypatch, repos)
    cfg = load_config("tiny", TINY + overrides)
    paths = new_run(tiny_run, tmp_path / "run")
    assert download_data.run(cfg, paths) == 0
    assert prepare_data.run(cfg, paths) == 0
    bench = read_json(paths.data_report)["rewardbench"]
    assert bench["total"] == len(rows) and bench["dropped"] == 3
    assert bench["dropped_by_reason"]["null_field"] == 3
    assert bench["first_dropped_line"] == {"null_field": 4}


@pytest.mark.hardening("2", "shipped fixture truncated to 25%")
def test_truncated_fixture_fails_with_one_line(tmp_path, monkeypatch, capsys):
    from paper_repro.fixtures import tiny

    folder = tmp_path / "fixtures"
    shutil.copytree(tiny.FIXTURE_DIR, folder)
    train = folder / "preference_train.jsonl"
    lines = train.read_bytes().splitlines(keepends=True)
    train.write_bytes(b"".join(lines[: len(lines) // 4]))
    monkeypatch.setattr(tiny, "FIXTURE_DIR", folder)
    monkeypatch.chdir(tmp_path)
    assert main(["download-data", "tiny", "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "preference_train.jsonl: 972 rows, expected 3888" in err[0]
    assert not (tmp_path / "run" / "download_data" / "preference.jsonl").exists()


@pytest.mark.hardening("2", "hub split with a known size delivering fewer rows")
def test_known_hub_split_with_wrong_row_count_is_refused(tmp_path, monkeypatch):
    from paper_repro.data import DataError

    repos = {n: (f"org/{n}", split, file_bytes(n)) for n, split in SPLITS.items()}
    repos["rewardbench"] = ("allenai/reward-bench", "filtered", file_bytes("rewardbench"))
    cfg = load_config("tiny", offline_hub(tmp_path, monkeypatch, repos))
    paths = RunPaths(tmp_path / "run")
    with pytest.raises(DataError, match=r"rows, expected 2985"):
        download_data.run(cfg, paths)
    assert not paths.raw_data("rewardbench").exists()


# --------------------------------------------------------------------------- RewardBench


@pytest.fixture(scope="module")
def bench_run(tiny_run, tmp_path_factory):
    """The tiny run with a tie and an empty response in its RewardBench file, prepared again, and
    a tiny RM (the base with a random head) exported."""
    from paper_repro.data import load_tokenizer
    from paper_repro.training.modeling import load_reward_model_from_base

    root = tmp_path_factory.mktemp("bench") / "run"
    shutil.copytree(tiny_run.root, root, ignore=shutil.ignore_patterns("mlflow*", "tracking"))
    paths = RunPaths(root)
    rows = [json.loads(x) for x in paths.raw_data("rewardbench").read_text().splitlines()]
    rows[0]["rejected"] = rows[0]["chosen"]  # a tie
    rows[1]["rejected"] = ""  # an empty response
    paths.raw_data("rewardbench").write_text("".join(json.dumps(r) + "\n" for r in rows))
    remanifest(paths, "download_data")
    cfg = load_config("tiny", TINY)
    assert prepare_data.run(cfg, paths) == 0
    model = load_reward_model_from_base(paths.base_model, pad_token_id=511, init_std=1.0, seed=0)
    model.save_pretrained(paths.rm_model, safe_serialization=True)
    load_tokenizer(paths.base_model).save_pretrained(paths.rm_model)
    remanifest(paths, "export_rm", all_files=True)
    return paths


def _eval(paths, mode: str) -> dict:
    from paper_repro.stages import eval_rewardbench

    cfg = load_config("tiny", TINY)
    cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, input_mode=mode))
    assert eval_rewardbench.run(cfg, paths) == 0
    return read_json(paths.eval_scores)


@pytest.mark.hardening("4", "RewardBench tie and empty response: kept and scored in both modes")
def test_ties_count_as_wrong_with_equal_denominators_in_both_modes(bench_run):
    scores = {mode: _eval(bench_run, mode) for mode in ("training-format", "tokenizer-template")}
    for s in scores.values():
        assert s["n_pairs"] == 768 and s["ties"] >= 1  # the tie is scored (wrong), not dropped
        assert s["inputs"]["source_rows"] == 768
    a, b = (scores[m]["subsets"] for m in scores)
    assert {k: v["n"] for k, v in a.items()} == {k: v["n"] for k, v in b.items()}


@pytest.mark.hardening("4", "RewardBench row without subset: both eval modes refuse, one line")
def test_invalid_rewardbench_row_stops_both_modes_alike(bench_run, tmp_path):
    from paper_repro.stages.eval_rewardbench import EvalError

    root = tmp_path / "run"
    shutil.copytree(bench_run.root, root)
    paths = RunPaths(root)
    rows = paths.raw_data("rewardbench").read_text().splitlines(keepends=True)
    rows[4] = json.dumps({k: v for k, v in json.loads(rows[4]).items() if k != "subset"}) + "\n"
    paths.raw_data("rewardbench").write_text("".join(rows))
    remanifest(paths, "download_data")
    assert prepare_data.run(load_config("tiny", TINY), paths) == 0
    assert read_json(paths.data_report)["rewardbench"]["first_dropped_line"] == {"missing_keys": 5}
    messages = []
    for mode in ("training-format", "tokenizer-template"):
        with pytest.raises(EvalError) as exc:
            _eval(paths, mode)
        messages.append(str(exc.value))
    assert messages[0] == messages[1]
    assert "1 dropped (missing_keys 1, first line 5) of 768 RewardBench rows" in messages[0]
    assert "\n" not in messages[0]


# --------------------------------------------------------------------------- parquet sources


def _bench_rows() -> list[dict]:
    from paper_repro.fixtures.tiny import FIXTURE_DIR

    return [json.loads(x) for x in (FIXTURE_DIR / FILES["rewardbench"]).read_text().splitlines()]


def _parquet(table) -> bytes:
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def _two_chosen_columns() -> bytes:
    """The RewardBench split with a second ``chosen`` column of other text after the first."""
    import pyarrow as pa

    table = pa.Table.from_pylist(_bench_rows())
    return _parquet(table.append_column("chosen", pa.array(["hijacked"] * len(table))))


def _duplicate_struct_field() -> bytes:
    """A message list whose struct has ``content`` twice."""
    import pyarrow as pa

    msg = pa.struct([("role", pa.string()), ("content", pa.string()), ("content", pa.string())])
    arr = pa.array([[("user", "Hi?", "x")]], pa.list_(msg))
    return _parquet(pa.table({"messages": arr}))


def _invalid_utf8_row() -> bytes:
    """The RewardBench split with bytes 0xff 0xfe (never UTF-8) as row 3's prompt."""
    import pyarrow as pa

    rows = _bench_rows()
    texts = [r["prompt"].encode() for r in rows]
    texts[2] = b"\xff\xfe"
    offsets = [0]
    for t in texts:
        offsets.append(offsets[-1] + len(t))
    data = pa.py_buffer(b"".join(texts))
    prompt = pa.Array.from_buffers(
        pa.string(),
        len(texts),
        [None, pa.py_buffer(pa.array(offsets, pa.int32()).buffers()[1]), data],
    )
    table = pa.Table.from_pylist(rows)
    table = table.set_column(table.schema.get_field_index("prompt"), "prompt", prompt)
    return _parquet(table)


PARQUET_CASES = {
    "two `chosen` columns": (
        "rewardbench",
        _two_chosen_columns,
        "duplicate column names ['chosen']",
    ),
    "a struct field twice": ("ppo_prompts", _duplicate_struct_field, "['messages.content']"),
    "invalid UTF-8 in a string column": (
        "rewardbench",
        _invalid_utf8_row,
        "column 'prompt', row 3: invalid UTF-8",
    ),
}


@pytest.mark.parametrize(
    ("case", "reader"),
    [
        pytest.param(c, r, marks=pytest.mark.hardening("4", f"parquet with {c} ({r} reader)"))
        for c in PARQUET_CASES
        for r in ("hub", "local")
    ],
)
def test_malformed_parquet_is_refused_with_one_line(case, reader, tmp_path, monkeypatch, capsys):
    """A parquet file that breaks the format is refused by name, exit 2; nothing is written (a
    second ``chosen`` column used to replace every chosen response of the split, silently)."""
    name, make, words = PARQUET_CASES[case]
    data = make()
    if reader == "hub":
        repos = {n: (f"org/{n}", split, file_bytes(n)) for n, split in SPLITS.items()}
        repos[name] = (f"org/{name}", SPLITS[name], data)
        overrides = offline_hub(tmp_path, monkeypatch, repos)
    else:
        files = write_files(tmp_path / "local")
        files[name] = tmp_path / "local" / f"{name}.parquet"
        files[name].write_bytes(data)
        overrides = ["data.source=local"] + [f"data.{n}.local_path={p}" for n, p in files.items()]
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    assert main(["download-data", "tiny", *overrides, "--run-dir", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0] and ".parquet" in err[0], err
    assert not RunPaths(run).raw_data(name).exists()


@pytest.mark.parametrize(
    ("body", "words"),
    [
        pytest.param(
            b'{"pad_token_id": ' + b"9" * 5000 + b"}",
            "not a readable config",
            marks=pytest.mark.hardening("4", "evaluated model's config.json: 5,000-digit pad"),
        ),
        (b'{"pad_token_id": "<pad>"}', "must be an integer or null"),
        (b'{"pad_token_id": true}', "must be an integer or null"),
        (b"[1]", "not a JSON object"),
        (b"\xff\xfe", "not a readable config"),
    ],
)
def test_evaluated_model_config_is_read_safely(tmp_path, body, words):
    """The config.json of a model someone else trained (eval-rewardbench --model) is read before
    transformers sees it: anything but an integer or null pad is one EvalError naming the file."""
    from paper_repro.rewardbench.model import EvalError, declared_pad

    (tmp_path / "config.json").write_bytes(body)
    with pytest.raises(EvalError, match=words) as exc:
        declared_pad(tmp_path)
    assert str(tmp_path / "config.json") in str(exc.value) and "\n" not in str(exc.value)
    (tmp_path / "config.json").write_bytes(b'{"pad_token_id": 128255}')
    assert declared_pad(tmp_path) == 128255


BIG = b"9" * 5000  # over Python's 4,300-digit int conversion limit: a ValueError, not JSON's


@pytest.mark.hardening("4", "5,000-digit integer in an upstream manifest.json: one line, exit 2")
def test_huge_integer_in_a_manifest_is_one_line(tiny_run, tmp_path, capsys, monkeypatch):
    root = tmp_path / "run"
    shutil.copytree(tiny_run.root, root, symlinks=True)
    paths = RunPaths(root)
    paths.manifest("prepare_data").write_bytes(b'{"files": {}, "n": ' + BIG + b"}")
    monkeypatch.chdir(tmp_path)
    assert main(["train-rm", "tiny", *TINY, "--run-dir", str(root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"paper-repro train-rm: {paths.manifest('prepare_data')}: not valid JSON "
        "(an integer of more than 4,300 digits)"
    ]


@pytest.mark.parametrize(
    ("attr", "body"),
    [
        pytest.param(
            a,
            b,
            id=a,
            marks=pytest.mark.hardening("4", f"5,000-digit integer in a report input ({a})"),
        )
        for a, b in [
            ("data_report", b'{"n": ' + BIG + b"}\n"),
            ("train_summary", b'{"heldout_accuracy": ' + BIG + b"}\n"),
            ("train_metrics", b'{"update": 1}\n{"update": ' + BIG + b"}\n"),
            ("ppo_metrics", b'{"step": 1, "kl": ' + BIG + b"}\n"),
        ]
    ],
)
def test_huge_integer_in_a_report_input_names_the_file(tmp_path, attr, body):
    """Every JSON / JSONL file the report reads goes through one parser that names the file (and
    line) for a number Python will not convert; the CLI prints that as one line, exit 2."""
    from paper_repro.reporting.inputs import ReportInputError, load_inputs

    paths = RunPaths(tmp_path / "run")
    path = getattr(paths, attr)
    path.parent.mkdir(parents=True)
    path.write_bytes(body)
    with pytest.raises(ReportInputError, match="an integer of more than 4,300 digits") as exc:
        load_inputs(paths)
    line = 2 if attr == "train_metrics" else 1
    where = f"{path}:{line}" if path.suffix == ".jsonl" else str(path)
    assert str(exc.value).startswith(f"{where}: not valid JSON") and "\n" not in str(exc.value)


@pytest.mark.hardening("4", "5,000-digit integer in identity.json or any io.read_json file")
def test_huge_integer_in_any_read_json_file_is_corrupt_file_error(tmp_path):
    from paper_repro.errors import CorruptFileError
    from paper_repro.provenance.identity import recorded

    paths = RunPaths(tmp_path)
    path = paths.identity("train_rm")
    path.parent.mkdir(parents=True)
    path.write_bytes(b'{"seed": ' + BIG + b"}")
    for read in (lambda: read_json(path), lambda: recorded(paths, "train_rm")):
        with pytest.raises(CorruptFileError, match="more than 4,300 digits") as exc:
            read()
        assert str(exc.value).startswith(f"{path}: not valid JSON")
