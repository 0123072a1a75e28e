"""export_rm on the tiny run: a real tiny Llama RM state -> HF folder -> reload and verify.

Covers: the fp32 round trip (bitwise head, rewards equal), the bf16 path (cast-exact weights,
exact fp32 reload), pad id in config and tokenizer and absent from all text, the Tulu chat
template, the model card and license files, MLflow by reference, and failures (missing head,
bad states, a save that drops or corrupts the head) that must exit non-zero and leave no model
folder (peer pitfalls: heads lost under ZeRO-3, evaluators scoring a random head).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from manifests import remanifest

from paper_repro.config import load_config
from paper_repro.provenance.io import sha256_file, sha256_tree
from paper_repro.provenance.manifest import verify_manifest
from paper_repro.provenance.paths import RunPaths
from paper_repro.tracking import recorded_run_ids

TEST_OVERRIDES = ["model.tiny.sft_steps=60", "rm.epochs=2"]  # as tests/conftest.py's tiny_cfg
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trained_state(tiny_run):
    """A stand-in for train_rm's output: the tiny base trunk plus a seeded head, scaled so the
    rewards spread (the trainer itself is tested elsewhere), as {name: fp32 tensor}."""
    import torch

    from paper_repro.training.modeling import load_reward_model_from_base

    model = load_reward_model_from_base(
        tiny_run.base_model, pad_token_id=511, init_std=0.02, seed=7
    )
    with torch.no_grad():
        model.score.weight.mul_(10.0)
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def make_run(root: Path, tiny_run: RunPaths, state: dict) -> RunPaths:
    from safetensors.torch import save_file

    paths = RunPaths(root)
    for stage in ("download_base", "prepare_data"):
        shutil.copytree(tiny_run.stage_dir(stage), paths.stage_dir(stage))
    paths.trained_state.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(paths.trained_state))
    paths.train_summary.write_text(
        json.dumps({"updates": 150, "final": {"loss": 0.2468, "accuracy": 0.9375}})
    )
    remanifest(paths, "train_rm", all_files=True)  # what train_rm writes when it ends
    return paths


def no_leftovers(paths: RunPaths) -> list[str]:
    folder = paths.rm_model.parent
    return [p.name for p in folder.iterdir() if p.name.startswith(".")] if folder.exists() else []


@pytest.fixture(scope="module")
def fp32_export(tiny_run, tiny_cfg, trained_state, tmp_path_factory):
    import time

    from paper_repro.stages import export_rm

    paths = make_run(tmp_path_factory.mktemp("export_fp32"), tiny_run, trained_state)
    t0 = time.perf_counter()
    assert export_rm.run(tiny_cfg, paths) == 0
    print(f"\nfp32 tiny export + verification: {time.perf_counter() - t0:.1f} s")
    return paths


def test_fp32_round_trip_verification(fp32_export):
    ver = json.loads(fp32_export.export_verification.read_text())
    assert ver["passed"] and all(c["passed"] for c in ver["checks"])
    names = {c["name"] for c in ver["checks"]}
    assert {
        "score_head_equal",
        "all_weights_equal",
        "rewards_match_training",
        "hf_pooling_matches_mask_pooling",
        "pad_id_absent_from_text",
    } <= names
    assert ver["verify_split"] == "heldout" and ver["verify_pairs"] == 64
    assert ver["reward_max_abs_diff"] <= 1e-5 and ver["hf_pooling_max_abs_diff"] <= 1e-5
    assert ver["accuracy_exported"] == ver["accuracy_training_model"]
    print(
        f"fp32: max |reward diff| {ver['reward_max_abs_diff']}, HF pooling "
        f"{ver['hf_pooling_max_abs_diff']}, {ver['export_seconds']} s"
    )
    model_file = fp32_export.rm_model / "model.safetensors"
    assert ver["files"]["model.safetensors"] == sha256_file(model_file)
    assert no_leftovers(fp32_export) == []
    # export_rm/manifest.json: every file of the folder, what later stages verify before use
    manifest = verify_manifest(fp32_export.rm_model, fp32_export.manifest("export_rm"), fast=False)
    files = sha256_tree(fp32_export.rm_model)
    assert manifest["files"] == ver["files"] == {n: h for n, h in files.items() if n != "README.md"}


def test_reloaded_head_is_the_trained_head(fp32_export, trained_state):
    import torch
    from transformers import AutoModelForSequenceClassification

    model, info = AutoModelForSequenceClassification.from_pretrained(
        str(fp32_export.rm_model), use_safetensors=True, output_loading_info=True
    )
    assert not any(info.values()), info
    assert model.config.num_labels == 1 and model.score.bias is None
    assert model.dtype == torch.float32
    assert torch.equal(model.score.weight, trained_state["score.weight"])  # bitwise
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, trained_state[name]), name


def test_rewards_equal_the_training_model_and_padding_side(fp32_export, trained_state, tiny_cfg):
    """Independent of the stage's own check: rewards of the exported folder on held-out pairs
    equal those of a model built from the trained tensors, with either padding side, and HF's
    pooled logits equal our mask pooling."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification
    from transformers import LlamaForSequenceClassification as Cls

    from paper_repro.data import load_pairs
    from paper_repro.training.modeling import pad_batch, rewards

    pairs = load_pairs(fp32_export.prepared("heldout"))
    seqs = [a.tolist() for a in pairs.chosen[:8] + pairs.rejected[:8]]
    exported = AutoModelForSequenceClassification.from_pretrained(str(fp32_export.rm_model)).eval()
    ref = Cls(AutoConfig.from_pretrained(str(fp32_export.rm_model))).eval()
    ref.load_state_dict(trained_state)
    with torch.no_grad():
        ids, mask = pad_batch(seqs, 511, side="right")
        r_ref, r_exp = rewards(ref, ids, mask), rewards(exported, ids, mask)
        r_hf = exported(input_ids=ids, attention_mask=mask).logits[:, 0]
        lids, lmask = pad_batch(seqs, 511, side="left")
        r_left = rewards(exported, lids, lmask)
    assert torch.equal(r_exp, r_ref)
    assert (r_hf - r_exp).abs().max() <= 1e-5
    assert (r_left - r_exp).abs().max() <= 1e-5
    assert r_ref.std() > 0.01  # a real spread, so equality means something


def test_pad_id_template_and_special_tokens(fp32_export):
    import numpy as np
    from transformers import AutoTokenizer

    from paper_repro.data import load_pairs
    from paper_repro.data.formatting import TULU_CHAT_TEMPLATE

    config = json.loads((fp32_export.rm_model / "config.json").read_text())
    assert config["pad_token_id"] == 511 and config["architectures"] == [
        "LlamaForSequenceClassification"
    ]
    tok = AutoTokenizer.from_pretrained(str(fp32_export.rm_model))
    assert tok.pad_token_id == 511 and tok.pad_token == "<|reserved_special_token_pad|>"
    assert 511 < config["vocab_size"]
    assert tok.chat_template == TULU_CHAT_TEMPLATE
    rendered = tok.apply_chat_template(
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
        tokenize=False,
    )
    assert rendered == "<|user|>\nHi\n<|assistant|>\nHello<|end_of_text|>\n"
    for split in ("train", "heldout", "rewardbench"):
        pairs = load_pairs(fp32_export.prepared(split))
        every = np.concatenate(pairs.chosen + pairs.rejected)
        assert every.size > 0 and not (every == 511).any(), split


def test_folder_reads_the_same_in_transformers_4x_and_holds_nothing_local(fp32_export):
    """The two JSON keys transformers 4.x reads (top-level rope_theta, a tokenizer class it can
    import), the tokenizer's real BOS/EOS in config.json, no local path in any file, no hidden
    file, and the manifest the workflow's consumers depend on. (That 4.51.0 and 4.57.6 really
    read it the same is the slow cross-version test in tests/workflow/test_tiny_dag.py.)"""
    import transformers

    from paper_repro.provenance.manifest import verify_manifest

    folder = fp32_export.rm_model
    config = json.loads((folder / "config.json").read_text())
    assert config["rope_theta"] == config["rope_parameters"]["rope_theta"] == 500000.0
    assert config["rope_scaling"] is None and config["torch_dtype"] == "float32"
    assert (config["bos_token_id"], config["eos_token_id"]) == (0, 1)  # the tokenizer's ids
    tok_config = json.loads((folder / "tokenizer_config.json").read_text())
    assert tok_config["tokenizer_class"] == "PreTrainedTokenizerFast"
    # else 4.x's tokenizer returns token_type_ids, which the model's forward rejects
    assert tok_config["model_input_names"] == ["input_ids", "attention_mask"]
    assert not {"is_local", "local_files_only"} & set(tok_config)
    local = [str(fp32_export.root.resolve()), str(Path.home()), str(REPO)]
    for f in folder.iterdir():
        assert not f.name.startswith("."), f.name
        text = f.read_bytes().decode("utf-8", errors="replace")
        assert not any(p in text for p in local), f.name
    assert "train_rm/final.safetensors" in (folder / "README.md").read_text()
    verify_manifest(folder, fp32_export.manifest("export_rm"))
    ver = json.loads(fp32_export.export_verification.read_text())
    assert ver["checked_with"]["transformers"] == transformers.__version__
    assert {"config_rope_theta_for_4x", "tokenizer_class_for_4x", "config_special_ids"} <= {
        c["name"] for c in ver["checks"] if c["passed"]
    }


@pytest.mark.slow
def test_crosscheck_calls_the_model_as_users_do_and_fails_when_they_fail(fp32_export, tmp_path):
    """In transformers 4.51.0 (reward-bench's pin): ``model(**tok(texts, padding=True))``, the
    text-classification pipeline and the card's snippet run and give the export's rewards. The
    same export without ``model_input_names`` (4.51's tokenizer then returns token_type_ids) or
    with the card's old ``dtype=`` fails the cross-check."""
    from paper_repro.export.build import ExportError
    from paper_repro.export.crosscheck import crosscheck

    record = crosscheck(fp32_export, ["4.51.0"])
    check = record["checked"]["4.51.0"]
    assert record["passed"] and check["user_calls_max_abs_diff"] <= 1e-5
    assert check["snippet_abs_diff"] <= 1e-5  # float32 export

    broken = RunPaths(tmp_path / "run")
    shutil.copytree(fp32_export.root, broken.root)
    path = broken.rm_model / "tokenizer_config.json"
    conf = json.loads(path.read_text())
    del conf["model_input_names"]
    path.write_text(json.dumps(conf))
    with pytest.raises(ExportError, match="token_type_ids"):
        crosscheck(broken, ["4.51.0"])
    path.write_text(json.dumps({**conf, "model_input_names": ["input_ids", "attention_mask"]}))
    card = broken.rm_model / "README.md"
    card.write_text(card.read_text().replace("torch_dtype=", "dtype="))
    with pytest.raises(ExportError, match="dtype"):
        crosscheck(broken, ["4.51.0"])


@pytest.mark.slow
def test_rewardbench_cli_scores_the_export_as_we_do_and_fails_when_it_cannot(fp32_export, tmp_path):
    """reward-bench 0.1.4's own CLI (offline, local pairs) loads the export and gives our
    rewards; without ``model_input_names`` (token_type_ids reach the model) or without a chat
    template (the CLI needs one or a FastChat name) it cannot, and the check raises."""
    from paper_repro.export.build import ExportError
    from paper_repro.export.rbcli import PAIRS, check

    record = check(fp32_export.rm_model)
    print(f"\nreward-bench CLI vs ours: {json.dumps(record)}")
    assert record["passed"] and record["pairs"] == len(PAIRS)
    assert record["reward_max_abs_diff"] <= 1e-4
    assert record["rewardbench_accuracy"] == record["ours_accuracy"]

    folder = tmp_path / "model"
    shutil.copytree(fp32_export.rm_model, folder)
    path = folder / "tokenizer_config.json"
    conf = json.loads(path.read_text())
    path.write_text(json.dumps({k: v for k, v in conf.items() if k != "model_input_names"}))
    with pytest.raises(ExportError, match="token_type_ids"):
        check(folder)
    path.write_text(json.dumps({k: v for k, v in conf.items() if k != "chat_template"}))
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    with pytest.raises(ExportError, match="chat template"):
        check(folder)


def test_model_card_and_license_files(fp32_export):
    card = (fp32_export.rm_model / "README.md").read_text()
    title = next(line for line in card.splitlines() if line.startswith("# "))
    assert title.startswith("# Llama 3")
    assert "Built with Meta Llama 3" in card
    assert "license: llama3" in card
    assert "0.9375" in card  # final metric from train_rm/summary.json
    assert "add_special_tokens=False" in card and "pooled at the last non-pad token" in card
    assert "torch_dtype=torch.float32" in card  # transformers 4.x rejects dtype=, 5.x takes both
    assert "lr: 0.003" in card  # resolved config
    for name in ("llama_3_license.txt", "NOTICE"):
        assert (fp32_export.rm_model / name).read_bytes() == (REPO / name).read_bytes()


def test_mlflow_records_the_model_by_reference(fp32_export, tiny_cfg):
    from mlflow.tracking import MlflowClient

    from paper_repro.tracking import tracking_uri

    client = MlflowClient(tracking_uri(tiny_cfg, fp32_export))
    run_id = recorded_run_ids(fp32_export)["export_rm"]
    run = client.get_run(run_id)
    model_file = fp32_export.rm_model / "model.safetensors"
    assert run.data.tags["file.rm_model/model.safetensors.sha256"] == sha256_file(model_file)
    assert run.data.metrics["reward_max_abs_diff"] <= 1e-5
    assert run.info.status == "FINISHED"
    uploaded = {a.path for a in client.list_artifacts(run_id)}
    assert "verification.json" in uploaded and "README.md" in uploaded
    assert not any(p.endswith(".safetensors") for p in uploaded)


def test_bf16_export(tiny_run, trained_state, tmp_path):
    import torch
    from safetensors import safe_open

    from paper_repro.stages import export_rm

    cfg = load_config("tiny", TEST_OVERRIDES + ["model.dtype=bfloat16", "export.verify_pairs=32"])
    paths = make_run(tmp_path / "run", tiny_run, trained_state)
    assert export_rm.run(cfg, paths) == 0
    ver = json.loads(paths.export_verification.read_text())
    assert ver["passed"] and ver["dtype"] == "bfloat16"
    assert ver["fp32_reload_max_abs_diff"] <= 1e-5  # the folder is exact, given bf16 weights
    assert ver["reward_max_abs_diff"] <= ver["reward_tolerance"]
    print(
        f"\nbf16: max |reward diff| vs fp32 {ver['reward_max_abs_diff']:.4g} (tolerance "
        f"{ver['reward_tolerance']:.4g}, reward scale {ver['reward_scale']:.3g}), fp32 reload "
        f"{ver['fp32_reload_max_abs_diff']}, preference agreement "
        f"{ver['preference_agreement']}, {ver['export_seconds']} s"
    )
    with safe_open(str(paths.rm_model / "model.safetensors"), framework="pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
        assert torch.equal(
            f.get_tensor("score.weight"), trained_state["score.weight"].to(torch.bfloat16)
        )
    assert json.loads((paths.rm_model / "config.json").read_text())["dtype"] == "bfloat16"


def _bad_state(kind: str, state: dict) -> dict:
    import torch

    s = dict(state)
    if kind == "missing_head":
        del s["score.weight"]
    elif kind == "empty_zero3_shard":
        s["score.weight"] = torch.zeros(0)
    elif kind == "bias_head":
        s["score.bias"] = torch.zeros(1)
    elif kind == "nan":
        s["score.weight"] = s["score.weight"].clone()
        s["score.weight"][0, 3] = float("nan")
    elif kind == "extra_key":
        s["lm_head.weight"] = torch.zeros(4, 4)
    elif kind == "wrong_layer_shape":
        s["model.layers.0.mlp.up_proj.weight"] = torch.zeros(8, 64)
    return s


BAD_STATES = {
    "missing_head": "no 'score.weight'",
    "empty_zero3_shard": "score.weight has shape (0,)",
    "bias_head": "score.bias",
    "nan": "NaN or Inf",
    "extra_key": "lm_head.weight",
    "wrong_layer_shape": "up_proj",
}


@pytest.mark.parametrize("kind", sorted(BAD_STATES))
def test_bad_trained_state_fails_without_model_folder(
    kind, tiny_run, tiny_cfg, trained_state, tmp_path
):
    from paper_repro.stages.export_rm import ExportError, export

    paths = make_run(tmp_path / "run", tiny_run, _bad_state(kind, trained_state))
    with pytest.raises(ExportError, match=re.escape(BAD_STATES[kind])):
        export(tiny_cfg, paths)
    assert not paths.rm_model.exists() and not paths.export_verification.exists()
    assert no_leftovers(paths) == []


def test_stage_exits_non_zero_with_a_clear_message(
    tiny_run, tiny_cfg, trained_state, tmp_path, capsys, monkeypatch
):
    from mlflow.tracking import MlflowClient

    from paper_repro.cli.commands import main
    from paper_repro.tracking import tracking_uri

    paths = make_run(tmp_path / "run", tiny_run, _bad_state("missing_head", trained_state))
    monkeypatch.chdir(tmp_path)
    assert main(["export-rm", "tiny", *TEST_OVERRIDES, "--run-dir", str(paths.root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("paper-repro export-rm: ") and "no 'score.weight'" in err
    assert not paths.rm_model.exists()
    run_id = recorded_run_ids(paths)["export_rm"]
    assert MlflowClient(tracking_uri(tiny_cfg, paths)).get_run(run_id).info.status == "FAILED"


def test_pad_id_outside_vocab_fails(tiny_run, trained_state, tmp_path):
    """A pad id >= vocab size (a new <pad> at 128256) must stop the export."""
    from paper_repro.stages.export_rm import ExportError, export

    cfg = load_config("tiny", TEST_OVERRIDES + ["data.pad_token_id=512"])
    paths = make_run(tmp_path / "run", tiny_run, trained_state)
    with pytest.raises(ExportError, match="outside the model vocabulary"):
        export(cfg, paths)
    assert not paths.rm_model.exists()


def _corrupting_save(kind: str):
    """Wrap save_pretrained so the written weights lose or change the head, as a ZeRO-3 save
    without gathering would; only the verification can notice."""
    from safetensors.torch import load_file, save_file
    from transformers import PreTrainedModel

    original = PreTrainedModel.save_pretrained

    def save(self, save_directory, *args, **kwargs):
        original(self, save_directory, *args, **kwargs)
        path = Path(save_directory) / "model.safetensors"
        tensors = load_file(str(path))
        if kind == "dropped_head":
            del tensors["score.weight"]
        else:  # perturbed_head: one bf16-sized nudge of a single weight
            tensors["score.weight"] = tensors["score.weight"].clone()
            tensors["score.weight"][0, 0] += 1e-2
        save_file(tensors, str(path), metadata={"format": "pt"})

    return save


@pytest.mark.parametrize("kind", ["dropped_head", "perturbed_head"])
def test_save_that_corrupts_the_head_fails(kind, tiny_run, trained_state, tmp_path, monkeypatch):
    from transformers import PreTrainedModel

    from paper_repro.stages import export_rm

    cfg = load_config("tiny", TEST_OVERRIDES + ["export.verify_pairs=16"])
    paths = make_run(tmp_path / "run", tiny_run, trained_state)
    # stale outputs of an earlier export must not survive a failed one
    paths.rm_model.mkdir(parents=True)
    (paths.rm_model / "model.safetensors").write_text("stale")
    paths.export_verification.write_text("{}")
    monkeypatch.setattr(PreTrainedModel, "save_pretrained", _corrupting_save(kind))
    with pytest.raises(export_rm.ExportError) as info:
        export_rm.export(cfg, paths)
    err = str(info.value)
    assert "verification of" in err and "all_weights_equal" in err
    assert "rewards_match_training" in err
    if kind == "dropped_head":
        assert "reload_all_weights_present" in err and "score.weight" in err
    assert not paths.rm_model.exists() and not paths.export_verification.exists()
    assert no_leftovers(paths) == []


def test_base_without_pad_token_gets_the_reserved_pad(tiny_run, tiny_cfg, trained_state, tmp_path):
    """The Llama 3 path: the SFT tokenizer has no pad token and its config no pad id; the export
    sets both from data.pad_token_id (the token string at that id)."""
    from transformers import AutoTokenizer

    from paper_repro.stages import export_rm

    paths = make_run(tmp_path / "run", tiny_run, trained_state)
    tok = AutoTokenizer.from_pretrained(str(paths.base_model))
    tok.pad_token = None
    tok.save_pretrained(str(paths.base_model))
    cfg_file = paths.base_model / "config.json"
    config = json.loads(cfg_file.read_text())
    config["pad_token_id"] = None
    cfg_file.write_text(json.dumps(config))
    remanifest(paths, "download_base", all_files=True)  # this edited base is the test's input
    assert AutoTokenizer.from_pretrained(str(paths.base_model)).pad_token_id is None

    cfg = load_config("tiny", TEST_OVERRIDES + ["export.verify_pairs=8"])
    assert export_rm.run(cfg, paths) == 0
    out = AutoTokenizer.from_pretrained(str(paths.rm_model))
    assert (out.pad_token, out.pad_token_id) == ("<|reserved_special_token_pad|>", 511)
    assert json.loads((paths.rm_model / "config.json").read_text())["pad_token_id"] == 511
