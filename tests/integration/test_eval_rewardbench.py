"""The eval_rewardbench stage end to end on a tiny exported RM: both input modes, every output
file, MLflow records, and the loud failures (double BOS, missing template, wrong tokenizer)."""

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from manifests import remanifest

from paper_repro.rewardbench import sections as rb


@pytest.fixture(scope="module")
def eval_run(tiny_run, tiny_cfg, tmp_path_factory):
    """A private copy of the prepared tiny run plus ``export_rm/model``: the tiny SFT base as a
    LlamaForSequenceClassification with an O(1) random head, saved as safetensors + tokenizer."""
    from paper_repro.data import load_tokenizer
    from paper_repro.provenance.manifest import write_manifest
    from paper_repro.provenance.paths import RunPaths
    from paper_repro.training.modeling import load_reward_model_from_base

    root = tmp_path_factory.mktemp("eval_run") / "run"
    shutil.copytree(tiny_run.root, root)
    paths = RunPaths(root)
    model = load_reward_model_from_base(
        paths.base_model, pad_token_id=tiny_cfg.data.pad_token_id, init_std=1.0, seed=0
    )
    model.save_pretrained(paths.rm_model, safe_serialization=True)
    load_tokenizer(paths.base_model).save_pretrained(paths.rm_model)
    write_manifest(paths.manifest("export_rm"), paths.rm_model)
    return paths


def with_eval(cfg, **changes):
    """The session's tiny config with some ``eval`` fields changed (the fixture stays intact)."""
    return dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, **changes))


def _run(cfg, paths, **changes):
    from paper_repro.stages import eval_rewardbench

    assert eval_rewardbench.run(with_eval(cfg, **changes), paths) == 0
    return json.loads(paths.eval_scores.read_text()), json.loads(paths.eval_comparison.read_text())


def test_training_format_end_to_end(eval_run, tiny_cfg):
    import pyarrow.parquet as pq
    from mlflow.tracking import MlflowClient

    from paper_repro.tracking import recorded_run_ids, tracking_uri

    scores, comparison = _run(tiny_cfg, eval_run)
    pairs = pq.read_table(eval_run.eval_pairs).to_pandas()
    assert list(pairs.columns) == ["id", "subset", "reward_chosen", "reward_rejected", "correct"]
    assert len(pairs) == scores["n_pairs"] == 768
    assert pairs["id"].tolist() == sorted(pairs["id"])  # dataset order (the fixture is sorted)
    assert (pairs["correct"] == (pairs["reward_chosen"] > pairs["reward_rejected"])).all()
    assert scores["input_mode"] == "training-format" and scores["dtype"] == "float32"
    assert scores["inputs"]["truncation"] == "none" and scores["inputs"]["source_rows"] == 768
    assert list(scores["inputs"]["pooled_tokens"]) == ["<|end_of_text|>"]  # pooled at EOS
    # The JSON numbers are exactly what the pure functions give for the per-pair table.
    ev = rb.evaluate(
        pairs["subset"].tolist(),
        pairs["reward_chosen"],
        pairs["reward_rejected"],
        bootstrap_samples=tiny_cfg.eval.bootstrap_samples,
        bootstrap_seed=tiny_cfg.eval.bootstrap_seed,
    )
    assert scores["score"] == ev.current.score.as_dict()
    for name, sub in scores["subsets"].items():
        rows = pairs[pairs["subset"] == name]
        assert sub["n"] == len(rows) and sub["correct"] == int(rows["correct"].sum())
    for est in (*scores["sections"].values(), scores["score"]):
        assert 0 <= est["ci_low"] <= est["score"] <= est["ci_high"] <= 1
    assert scores["scoring"]["padded_tokens"] <= scores["scoring"]["batches"] * 8192
    rows = comparison["rows"]
    assert len(rows) == 10 and len(comparison["first_revision"]["rows"]) == 10
    chat = next(r for r in rows if r["metric"] == "Chat" and "70b" in r["model"])
    assert chat["reproduced_pct"] == round(100 * scores["sections"]["Chat"]["score"], 2)
    assert (
        "| llama-3-tulu-2-70b-uf-mean-rm | Chat |"
        in (eval_run.stage_dir("eval_rewardbench") / "comparison.md").read_text()
    )

    client = MlflowClient(tracking_uri(tiny_cfg, eval_run))
    run = client.get_run(recorded_run_ids(eval_run)["eval_rewardbench"])
    assert run.data.tags["input_mode"] == "training-format"
    assert run.data.metrics["score"] == pytest.approx(scores["score"]["score"])
    assert run.data.metrics["section.chat_hard"] == pytest.approx(
        scores["sections"]["Chat Hard"]["score"]
    )
    assert run.data.metrics["subset.math-prm"] == scores["subsets"]["math-prm"]["accuracy"]
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"scores.json", "comparison.json", "comparison.md"} <= names

    # A rerun gives byte-identical results (deterministic scoring and bootstrap).
    before = eval_run.eval_scores.read_text()
    first_rewards = pairs["reward_chosen"].to_numpy()
    _run(tiny_cfg, eval_run)
    again = json.loads(eval_run.eval_scores.read_text())
    assert {k: v for k, v in again.items() if k != "scoring"} == {
        k: v for k, v in json.loads(before).items() if k != "scoring"
    }
    assert np.array_equal(
        pq.read_table(eval_run.eval_pairs)["reward_chosen"].to_numpy(), first_rewards
    )


def test_tokenizer_template_mode_truncates_left(eval_run, tiny_cfg):
    scores, comparison = _run(
        tiny_cfg, eval_run, input_mode="tokenizer-template", template_max_length=48
    )
    info = scores["inputs"]
    assert scores["input_mode"] == comparison["input_mode"] == "tokenizer-template"
    assert info["bos"] == "prepended"  # the tiny tokenizer adds none; Llama 3's adds one
    assert info["truncation"]["side"] == "left" and info["truncation"]["truncated_pairs"] > 0
    assert info["pairs_over_2048"] == 0
    # The Tulu template ends in "<eos>\n", so the leaderboard reward is read at the newline.
    assert list(info["pooled_tokens"]) == ["Ċ"]
    assert scores["n_pairs"] == 768


def test_template_ids_one_bos_and_double_bos_is_an_error(eval_run):
    from paper_repro.data import load_tokenizer
    from paper_repro.rewardbench.inputs import template_ids
    from paper_repro.rewardbench.model import EvalError

    tok = load_tokenizer(eval_run.rm_model)
    msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    ids, how = template_ids(tok, msgs)
    assert ids[0] == tok.bos_token_id and ids[1] != tok.bos_token_id and how == "prepended"
    assert ids[-2:] == [tok.eos_token_id, tok.convert_tokens_to_ids("Ċ")]
    tok.chat_template = "{{ bos_token }}{{ bos_token }}" + tok.chat_template
    with pytest.raises(EvalError, match="double BOS"):
        template_ids(tok, msgs)


def test_missing_template_and_foreign_tokenizer_fail_loudly(eval_run, tiny_cfg, tmp_path):
    from paper_repro.data import FingerprintMismatch, load_tokenizer
    from paper_repro.provenance.paths import RunPaths
    from paper_repro.rewardbench.inputs import prepared_inputs
    from paper_repro.rewardbench.model import EvalError
    from paper_repro.stages import eval_rewardbench

    root = tmp_path / "run"
    shutil.copytree(eval_run.root, root)
    paths = RunPaths(root)
    paths.mlflow_db.unlink(
        missing_ok=True
    )  # a fresh store: the same weights would reuse the copied version
    cfg_file = paths.rm_model / "tokenizer_config.json"
    conf = json.loads(cfg_file.read_text())
    conf.pop("chat_template", None)
    cfg_file.write_text(json.dumps(conf))
    (paths.rm_model / "chat_template.jinja").unlink(missing_ok=True)
    remanifest(paths, "export_rm", all_files=True)  # the edited export is this test's input
    assert not load_tokenizer(paths.rm_model).chat_template
    cfg = with_eval(tiny_cfg, input_mode="tokenizer-template")
    with pytest.raises(EvalError, match="no chat template"):
        eval_rewardbench.run(cfg, paths)

    # Training format: a tokenizer whose vocabulary differs from the data's is refused.
    tok = load_tokenizer(paths.rm_model)
    tok.add_tokens(["<|brand_new|>"])
    with pytest.raises(FingerprintMismatch):
        prepared_inputs(paths, tok)


# --------------------------------------------------------------------------- results file, card


def test_leaderboard_json_is_reward_bench_layout(eval_run, tiny_cfg):
    """reward-bench's results file (run_rm.py results_grouped, save_to_hub's serialisation):
    flat, model/model_type/chat_template plus one accuracy per subset, 4-space indent, sorted."""
    scores, _ = _run(tiny_cfg, eval_run)
    path = eval_run.eval_files().leaderboard
    board = json.loads(path.read_text())
    assert set(board) == {"model", "model_type", "chat_template", *rb.EXAMPLE_COUNTS}
    assert board["model"] == "paper-repro/tiny-rm" and board["model_type"] == "Seq. Classifier"
    assert board["chat_template"] == "tulu (EasyLM training)"
    for name, sub in scores["subsets"].items():
        assert board[name] == sub["accuracy"]
    assert path.read_text() == json.dumps(board, indent=4, sort_keys=True) + "\n"
    # the leaderboard's own section arithmetic on this file gives our sections
    acc = {k: v for k, v in board.items() if k in rb.EXAMPLE_COUNTS}
    for name, value in rb.section_scores(acc).items():
        assert value == pytest.approx(scores["sections"][name]["score"])


def test_stage_fills_the_card_and_leaves_the_export_manifest(eval_run, tiny_cfg):
    """The card gets this model's results; the export's manifest (the rule output ppo and
    eval_rewardbench depend on) does not list the card, so it stays the same and still verifies."""
    from paper_repro.export.card import CARD_FILE, NOT_EVALUATED, RESULTS_BEGIN, RESULTS_END
    from paper_repro.provenance.manifest import verify_manifest

    card = eval_run.rm_model / "README.md"
    card.write_text(
        f"# card\n\n## RewardBench\n\n{RESULTS_BEGIN}\n{NOT_EVALUATED}\n{RESULTS_END}\n"
    )
    manifest = eval_run.manifest("export_rm")
    before = manifest.read_bytes()
    scores, _ = _run(tiny_cfg, eval_run)
    text = card.read_text()
    assert NOT_EVALUATED not in text and text.count(RESULTS_BEGIN) == 1
    s = scores["score"]
    mine = f"{100 * s['score']:.1f} [{100 * s['ci_low']:.1f}, {100 * s['ci_high']:.1f}]"
    assert f"| this model | {mine} |" in text
    assert "| `allenai/llama-3-tulu-2-70b-uf-mean-rm` (its card) | 71.0 | 86.3 |" in text
    assert manifest.read_bytes() == before
    assert CARD_FILE not in verify_manifest(eval_run.rm_model, manifest)["files"]


# --------------------------------------------------------------------------- MLflow model


def _latest_version(client, name):
    return max(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version))


def test_registered_version_carries_the_score_and_loads(eval_run, tiny_cfg):
    """The tiny export is logged as a loadable pyfunc (a copy), registered as a version whose
    tags hold the Score and sections; the loaded model scores a training-format text exactly as
    the pipeline's own scoring does."""
    import torch
    from mlflow.tracking import MlflowClient

    from paper_repro.tracking import tracking_uri
    from paper_repro.tracking.models import _fluent_uri, input_example
    from paper_repro.training.modeling import rewards

    scores, _ = _run(tiny_cfg, eval_run)
    uri = tracking_uri(tiny_cfg, eval_run)
    client = MlflowClient(uri)
    v = _latest_version(client, "paper-repro-tiny-rm")
    assert v.tags["rewardbench.score"] == f"{scores['score']['score']:.6f}"
    assert v.tags["rewardbench.chat_hard"] == f"{scores['sections']['Chat Hard']['score']:.6f}"
    # a rerun on the same weights keeps the version the first evaluation registered
    assert client.get_run(v.run_id).data.tags["stage"] == "eval_rewardbench"
    model = client.get_logged_model(v.source.removeprefix("models:/"))
    assert {m.key for m in model.metrics} >= {"rewardbench.score", "rewardbench.safety"}
    assert model.tags.get("mlflow.model.isExternal") != "true"
    exp = client.get_experiment(model.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"

    import mlflow

    example = input_example(eval_run.rm_model)
    with _fluent_uri(uri):
        loaded = mlflow.pyfunc.load_model(f"models:/paper-repro-tiny-rm/{v.version}")
        got = loaded.predict(example)
    from paper_repro.data import load_tokenizer
    from paper_repro.rewardbench.model import load_model

    tok = load_tokenizer(eval_run.rm_model)
    ids = torch.tensor([tok(example["text"][0], add_special_tokens=False)["input_ids"]])
    want = rewards(load_model(eval_run.rm_model, "float32"), ids, torch.ones_like(ids))
    assert float(got[0]) == pytest.approx(float(want[0]), abs=1e-5)


def test_large_export_is_referenced_not_copied(eval_run, tiny_cfg, tmp_path):
    """Above tracking.copy_model_max_mb the record is an external logged model: path and the
    sha256 of every file, no weights in the artifact store."""
    from mlflow.tracking import MlflowClient

    from paper_repro.provenance.manifest import files_digest
    from paper_repro.provenance.paths import RunPaths
    from paper_repro.tracking import tracking_uri

    root = tmp_path / "run"
    shutil.copytree(eval_run.root, root)
    paths = RunPaths(root)
    paths.mlflow_db.unlink(
        missing_ok=True
    )  # a fresh store: the same weights would reuse the copied version
    cfg = dataclasses.replace(
        tiny_cfg, tracking=dataclasses.replace(tiny_cfg.tracking, copy_model_max_mb=0)
    )
    _run(cfg, paths)
    client = MlflowClient(tracking_uri(cfg, paths))
    v = _latest_version(client, "paper-repro-tiny-rm")
    model = client.get_logged_model(v.source.removeprefix("models:/"))
    assert model.tags["mlflow.model.isExternal"] == "true"
    assert v.tags["export.path"] == str(paths.rm_model.resolve())
    # the logged model's artifacts: the MLflow stub and the sha256 manifest, no weights
    stored = Path(model.artifact_location.removeprefix("file://"))
    assert sorted(p.name for p in stored.rglob("*") if p.is_file()) == [
        "MLmodel",
        "export.manifest.json",
    ]
    files = json.loads((stored / "export.manifest.json").read_text())["files"]
    assert "model.safetensors" in files and "README.md" not in files
    assert v.tags["export.files_sha256"] == files_digest(files)


# --------------------------------------------------------------------------- any model (--model)


def _cli(*args: str) -> int:
    from paper_repro.cli import commands as cli

    return cli.main(["eval-rewardbench", "tiny", "model.tiny.sft_steps=60", "rm.epochs=2", *args])


def test_any_local_model_gives_the_stage_rewards(eval_run, tiny_cfg, tmp_path):
    """--model on the export folder: scored as someone else's model (its own tokenizer renders
    the raw pairs, no prepare_data), yet every reward equals the stage's, and MLflow is left
    alone."""
    import pyarrow.parquet as pq
    from mlflow.tracking import MlflowClient

    from paper_repro.tracking import tracking_uri

    _run(tiny_cfg, eval_run)
    client = MlflowClient(tracking_uri(tiny_cfg, eval_run))
    versions = len(client.search_model_versions("name='paper-repro-tiny-rm'"))
    out = tmp_path / "any"
    # the Tulu training format on request (a model's own chat template is the default)
    argv = ["--model", str(eval_run.rm_model), "--out", str(out), "eval.input_mode=training-format"]
    assert _cli("--run-dir", str(eval_run.root), *argv) == 0
    stage = pq.read_table(eval_run.eval_pairs).to_pandas()
    mine = pq.read_table(out / "pairs.parquet").to_pandas()
    assert mine["id"].tolist() == stage["id"].tolist()
    assert np.array_equal(mine["reward_chosen"], stage["reward_chosen"])
    assert np.array_equal(mine["reward_rejected"], stage["reward_rejected"])
    scores = json.loads((out / "scores.json").read_text())
    assert scores["inputs"]["source"].endswith("download_data/rewardbench.jsonl")
    board = json.loads((out / "leaderboard.json").read_text())
    # named by the folders up to a telling one, never just "model"
    assert board["model"] == f"{eval_run.root.name}/export_rm/model"
    assert board["chat_template"] == "tulu (EasyLM training)"
    assert {p.name for p in out.iterdir()} == {
        "pairs.parquet",
        "scores.json",
        "comparison.json",
        "comparison.md",
        "leaderboard.json",
    }
    assert len(client.search_model_versions("name='paper-repro-tiny-rm'")) == versions


def test_any_model_without_a_usable_pad_is_scored_and_says_so(eval_run, tmp_path):
    """A published RM with a pad past the vocabulary (a new <pad> at 128256): padded with EOS,
    recorded in scores.json; the rewards do not change (pooling reads the mask)."""
    import pyarrow.parquet as pq

    folder = tmp_path / "published"
    shutil.copytree(eval_run.rm_model, folder)
    conf = json.loads((folder / "config.json").read_text())
    conf["pad_token_id"] = conf["vocab_size"]
    (folder / "config.json").write_text(json.dumps(conf))
    out = tmp_path / "out"
    argv = ["--model", str(folder), "--out", str(out), "eval.input_mode=training-format"]
    assert _cli("--run-dir", str(eval_run.root), *argv) == 0
    scores = json.loads((out / "scores.json").read_text())
    from paper_repro.data import load_tokenizer

    assert "outside the vocabulary" in scores["pad"]["note"]
    assert scores["pad"]["id"] == load_tokenizer(folder).eos_token_id
    stage = pq.read_table(eval_run.eval_pairs).to_pandas()
    mine = pq.read_table(out / "pairs.parquet").to_pandas()
    assert np.allclose(mine["reward_chosen"], stage["reward_chosen"], atol=1e-5)


@pytest.fixture
def fake_hub_model(eval_run, tmp_path, monkeypatch):
    """The exported tiny RM served by the fake hub (tests/integration/hubfake.py) as
    org/tiny-rm, with an empty hub cache; yields the hub."""
    from hubfake import FakeHub
    from huggingface_hub import constants

    files = {
        p.name: p.read_bytes()
        for p in eval_run.rm_model.iterdir()
        if p.is_file() and p.name != "README.md"
    }
    files["pytorch_model.bin"] = b"PICKLE" * 10  # must never be fetched
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    with FakeHub({"org/tiny-rm": files}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        yield hub


def test_hub_model_at_a_pin_is_downloaded_verified_and_scored(eval_run, fake_hub_model, tmp_path):
    import pyarrow.parquet as pq
    from hubfake import COMMIT

    from paper_repro.provenance.io import read_json

    out = tmp_path / "hub"
    argv = ["--model", f"org/tiny-rm@{COMMIT}", "--out", str(out)]
    assert _cli("--run-dir", str(eval_run.root), *argv, "eval.input_mode=training-format") == 0
    lock = read_json(out / "model.manifest.json")
    assert lock["commit"] == COMMIT and lock["expected_from"] == "hub metadata"
    assert "pytorch_model.bin" not in lock["files"] and "model.safetensors" in lock["files"]
    assert "pytorch_model.bin" not in fake_hub_model.downloads
    board = json.loads((out / "leaderboard.json").read_text())
    assert board["model"] == "org/tiny-rm"
    stage = pq.read_table(eval_run.eval_pairs).to_pandas()
    mine = pq.read_table(out / "pairs.parquet").to_pandas()
    assert np.array_equal(mine["reward_chosen"], stage["reward_chosen"])


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("org/tiny-rm", "pin the hub model to a commit"),
        ("org/tiny-rm@main", "pin the hub model to a commit"),
        ("not a model", "not a folder and not a hub id"),
    ],
)
def test_unpinned_or_unknown_model_is_refused(spec, message):
    from paper_repro.rewardbench.model import EvalError, parse_model_spec

    with pytest.raises(EvalError, match=message):
        parse_model_spec(spec)


def test_eval_reference_scores_a_hub_reference_like_the_stage(
    eval_run, tiny_cfg, fake_hub_model, tmp_path
):
    """eval_reference with reference.source=hub: the pinned download, then exactly
    eval_rewardbench's evaluation (same rewards for the same weights)."""
    import pyarrow.parquet as pq
    from hubfake import COMMIT

    from paper_repro.provenance.io import read_json
    from paper_repro.provenance.paths import RunPaths
    from paper_repro.stages import eval_reference

    _run(tiny_cfg, eval_run)
    root = tmp_path / "run"
    shutil.copytree(eval_run.root, root)
    paths = RunPaths(root)
    paths.mlflow_db.unlink(
        missing_ok=True
    )  # a fresh store: the same weights would reuse the copied version
    ref = dataclasses.replace(
        tiny_cfg.reference, source="hub", hub_id="org/tiny-rm", revision=COMMIT[:7]
    )
    assert eval_reference.run(dataclasses.replace(tiny_cfg, reference=ref), paths) == 0
    assert read_json(paths.reference_model_manifest)["commit"] == COMMIT
    files = paths.eval_files("eval_reference")
    assert json.loads(files.leaderboard.read_text())["model"] == "org/tiny-rm"
    stage = pq.read_table(eval_run.eval_pairs).to_pandas()
    mine = pq.read_table(files.pairs).to_pandas()
    assert np.array_equal(mine["reward_chosen"], stage["reward_chosen"])
