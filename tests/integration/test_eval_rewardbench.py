"""The eval_rewardbench stage end to end on a tiny exported RM: both input modes, every output
file, MLflow records, and the loud failures (double BOS, missing template, wrong tokenizer)."""

import dataclasses
import json
import shutil

import numpy as np
import pytest
from manifests import remanifest

from paper_repro import rewardbench as rb


@pytest.fixture(scope="module")
def eval_run(tiny_run, tiny_cfg, tmp_path_factory):
    """A private copy of the prepared tiny run plus ``export_rm/model``: the tiny SFT base as a
    LlamaForSequenceClassification with an O(1) random head, saved as safetensors + tokenizer."""
    from paper_repro.data import load_tokenizer
    from paper_repro.modeling import load_reward_model_from_base
    from paper_repro.paths import RunPaths

    root = tmp_path_factory.mktemp("eval_run") / "run"
    shutil.copytree(tiny_run.root, root)
    paths = RunPaths(root)
    model = load_reward_model_from_base(
        paths.base_model, pad_token_id=tiny_cfg.data.pad_token_id, init_std=1.0, seed=0
    )
    model.save_pretrained(paths.rm_model, safe_serialization=True)
    load_tokenizer(paths.base_model).save_pretrained(paths.rm_model)
    remanifest(paths, "export_rm")
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
    assert len(pairs) == scores["n_pairs"] == 192
    assert pairs["id"].tolist() == sorted(pairs["id"])  # dataset order (the fixture is sorted)
    assert (pairs["correct"] == (pairs["reward_chosen"] > pairs["reward_rejected"])).all()
    assert scores["input_mode"] == "training-format" and scores["dtype"] == "float32"
    assert scores["inputs"]["truncation"] == "none" and scores["inputs"]["source_rows"] == 192
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
    assert scores["n_pairs"] == 192


def test_template_ids_one_bos_and_double_bos_is_an_error(eval_run):
    from paper_repro.data import load_tokenizer
    from paper_repro.stages.eval_rewardbench import EvalError, template_ids

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
    from paper_repro.paths import RunPaths
    from paper_repro.stages import eval_rewardbench

    root = tmp_path / "run"
    shutil.copytree(eval_run.root, root)
    paths = RunPaths(root)
    cfg_file = paths.rm_model / "tokenizer_config.json"
    conf = json.loads(cfg_file.read_text())
    conf.pop("chat_template", None)
    cfg_file.write_text(json.dumps(conf))
    (paths.rm_model / "chat_template.jinja").unlink(missing_ok=True)
    remanifest(paths, "export_rm", all_files=True)  # the edited export is this test's input
    assert not load_tokenizer(paths.rm_model).chat_template
    cfg = with_eval(tiny_cfg, input_mode="tokenizer-template")
    with pytest.raises(eval_rewardbench.EvalError, match="no chat template"):
        eval_rewardbench.run(cfg, paths)

    # Training format: a tokenizer whose vocabulary differs from the data's is refused.
    tok = load_tokenizer(paths.rm_model)
    tok.add_tokens(["<|brand_new|>"])
    with pytest.raises(FingerprintMismatch):
        eval_rewardbench.training_format_inputs(paths, tok)
