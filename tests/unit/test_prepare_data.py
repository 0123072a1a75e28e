"""prepare_data: drop reasons, parquet outputs and readers, fingerprint, determinism."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from paper_repro.data import (
    DROP_REASONS,
    DataError,
    Encoder,
    FingerprintMismatch,
    check_fingerprint,
    iter_jsonl,
    load_pairs,
    load_prompts,
    split_heldout,
)
from paper_repro.provenance.io import read_json

MAX_LEN = 64


def msgs(prompt, answer, system=None):
    out = [{"role": "system", "content": system}] if system else []
    return out + [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]


def good(i):
    return {
        "chosen": msgs(f"Question {i}?", "A clear answer."),
        "rejected": msgs(f"Question {i}?", "A vague answer."),
        "margin": 1.0,
    }


def bad_rows() -> dict[str, bytes]:
    """One jsonl line per drop reason (raw bytes: one line is not even UTF-8)."""

    def line(obj):
        return json.dumps(obj).encode() + b"\n"

    return {
        "too_long": line({"chosen": msgs("Long?", "word " * 200), "rejected": msgs("Long?", "no")}),
        "empty_content": line({"chosen": msgs("Q?", "  \n "), "rejected": msgs("Q?", "no")}),
        "bad_role": line(
            {
                "chosen": [
                    {"role": "human", "content": "Q?"},
                    {"role": "assistant", "content": "a"},
                ],
                "rejected": msgs("Q?", "b"),
            }
        ),
        "final_turn_not_assistant": line(
            {"chosen": msgs("Q?", "a")[:1], "rejected": msgs("Q?", "b")}
        ),
        "missing_keys": line({"chosen": msgs("Q?", "a")}),
        "non_string_content": line(
            {"chosen": msgs("Q?", ["a", "list"]), "rejected": msgs("Q?", "b")}
        ),
        "identical_sides": line({"chosen": msgs("Q?", " same "), "rejected": msgs("Q?", "same")}),
        # a lone surrogate survives JSON decoding but cannot be encoded as UTF-8 text
        "undecodable_text": b'{"chosen": [{"role": "user", "content": "bad \\ud800"}, '
        b'{"role": "assistant", "content": "a"}], "rejected": []}\n',
        "bad_json": b'{"chosen": [ not json\n',
        "special_token_in_text": line(
            {"chosen": msgs("Q?", "a<|end_of_text|>b"), "rejected": msgs("Q?", "b")}
        ),
    }


@pytest.fixture(scope="module")
def tok():
    from paper_repro.fixtures.tiny import load_tokenizer

    return load_tokenizer()


def write_raw(path, good_n=3, extra=b""):
    body = b"".join(json.dumps(good(i)).encode() + b"\n" for i in range(good_n))
    body += b"".join(bad_rows().values()) + extra
    path.write_bytes(body)
    return path


def test_each_drop_reason_counted_once(tok, tmp_path):
    raw = list(iter_jsonl(write_raw(tmp_path / "p.jsonl")))
    enc = Encoder(tok, pad_token_id=511, max_length=MAX_LEN).pairs(raw)
    expected = {r: 1 for r in bad_rows()}
    assert {k: v for k, v in enc.dropped.items() if v} == expected
    assert len(enc.rows) == 3 and enc.total == 3 + len(bad_rows())
    assert set(expected) <= set(DROP_REASONS)


def test_undecodable_bytes_line(tok, tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_bytes(json.dumps(good(0)).encode() + b"\n" + b'{"chosen": "\xff\xfe"}\n')
    enc = Encoder(tok, 511, MAX_LEN).pairs(list(iter_jsonl(path)))
    assert enc.dropped == {"undecodable_text": 1} and enc.examples["undecodable_text"] == 1


def test_too_long_uses_either_side(tok, tmp_path):
    long_row = {"chosen": msgs("Q?", "ok"), "rejected": msgs("Q?", "word " * 100)}
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(long_row) + "\n")
    enc = Encoder(tok, 511, MAX_LEN).pairs(list(iter_jsonl(path)))
    assert enc.dropped == {"too_long": 1}


def test_pad_id_checks(tok):
    with pytest.raises(DataError, match="pad id 511"):
        Encoder(tok, pad_token_id=500, max_length=MAX_LEN)  # tokenizer's pad is 511
    with pytest.raises(DataError, match="outside the vocabulary"):
        Encoder(tok, pad_token_id=512, max_length=MAX_LEN)


def test_split_heldout_is_seeded_and_disjoint():
    rows = [{"row": i} for i in range(100)]
    a_train, a_held = split_heldout(rows, 0.1, seed=42)
    b_train, b_held = split_heldout(rows, 0.1, seed=42)
    assert a_held == b_held and len(a_held) == 10 and len(a_train) == 90
    assert {r["row"] for r in a_train}.isdisjoint(r["row"] for r in a_held)
    assert split_heldout(rows, 0.0, seed=42) == (rows, [])


# --------------------------------------------------------------------------- stage outputs


def test_tiny_run_outputs(tiny_run, tiny_cfg):
    pairs = load_pairs(tiny_run.prepared("train"))
    report = read_json(tiny_run.data_report)
    assert len(pairs) == report["train"]["kept"] == 3888  # 2400 hand-made + 1488 on-policy
    assert len(load_pairs(tiny_run.prepared("heldout"))) == 400
    bos, eos, pad = 0, 1, tiny_cfg.data.pad_token_id
    for side in (pairs.chosen, pairs.rejected):
        for ids in side:  # exactly one BOS first, EOS last, never a pad inside text
            assert ids.dtype == np.int32 and ids[0] == bos and ids[-1] == eos
            assert (ids == bos).sum() == 1 and not (ids == pad).any()
            assert len(ids) <= tiny_cfg.data.max_length
    lengths = report["preference"]["token_lengths"]["chosen"]
    assert lengths["max"] == max(len(c) for c in pairs.chosen)
    assert lengths["p50"] == float(np.percentile([len(c) for c in pairs.chosen], 50))

    bench = load_pairs(tiny_run.prepared("rewardbench"))
    assert len(bench) == 768 and bench.subset is not None and len(set(bench.id.tolist())) == 768
    prompts = load_prompts(tiny_run.prepared("ppo_prompts"))
    kept = report["ppo_prompts"]["kept"]
    assert len(prompts) == kept and kept + report["ppo_prompts"]["dropped"] == 600
    assert all(
        p[0] != bos and len(p) <= tiny_cfg.data.ppo_prompt_max_length for p in prompts.input_ids
    )


def test_fingerprint_accepts_same_tokenizer(tiny_run, tmp_path):
    from paper_repro.fixtures.tiny import load_tokenizer

    fp = check_fingerprint(tiny_run.fingerprint, tiny_run.base_model, strict_files=True)
    assert fp["pad_token_id"] == 511 and fp["truncation"]["policy"] == "drop"
    tok = load_tokenizer(tiny_run.base_model)
    tok.save_pretrained(tmp_path / "resaved")  # re-saved files may differ byte-wise
    check_fingerprint(tiny_run.fingerprint, tmp_path / "resaved")
    check_fingerprint(tiny_run.fingerprint, tok)


def test_fingerprint_refuses_other_tokenizer(tiny_run):
    from paper_repro.fixtures.tiny import load_tokenizer

    tok = load_tokenizer(tiny_run.base_model)
    tok.add_tokens(["<|user|>"])  # a tokenizer where the role tag is one token
    with pytest.raises(FingerprintMismatch, match="vocab_size: data 512 vs tokenizer 513"):
        check_fingerprint(tiny_run.fingerprint, tok)


def test_fingerprint_refuses_changed_pad(tiny_run, tmp_path):
    fp = read_json(tiny_run.fingerprint)
    fp["pad_token_id"] = 510
    (tmp_path / "fp.json").write_text(json.dumps(fp))
    with pytest.raises(FingerprintMismatch, match="pad id 511"):
        check_fingerprint(tmp_path / "fp.json", tiny_run.base_model)


def _copy_downloads(src, dst):
    for stage in ("download_base", "download_data"):
        shutil.copytree(src.stage_dir(stage), dst.stage_dir(stage), symlinks=True)


def test_prepare_is_deterministic_and_counts_bad_rows(tiny_run, tiny_cfg, tmp_path):
    from paper_repro.provenance.manifest import write_manifest
    from paper_repro.provenance.paths import RunPaths
    from paper_repro.stages import prepare_data

    again = RunPaths(tmp_path / "again")
    _copy_downloads(tiny_run, again)
    assert prepare_data.run(tiny_cfg, again) == 0
    for name in ("train", "heldout", "rewardbench", "ppo_prompts"):
        assert again.prepared(name).read_bytes() == tiny_run.prepared(name).read_bytes(), name
    assert again.fingerprint.read_bytes() == tiny_run.fingerprint.read_bytes()
    assert again.data_report.read_bytes() == tiny_run.data_report.read_bytes()

    # Append one row per drop reason to the raw preference file: counted, never a crash.
    bad = RunPaths(tmp_path / "bad")
    _copy_downloads(tiny_run, bad)
    with open(bad.raw_data("preference"), "ab") as f:
        f.write(b"".join(bad_rows().values()))
    manifest = read_json(bad.data_manifest)
    write_manifest(
        bad.data_manifest,
        bad.data_manifest.parent,
        list(manifest["files"]),
        datasets=manifest["datasets"],
    )
    assert prepare_data.run(tiny_cfg, bad) == 0
    got = read_json(bad.data_report)["preference"]
    assert got["kept"] == 3888 and got["dropped"] == len(bad_rows())
    assert got["dropped_by_reason"] == {r: int(r in bad_rows()) for r in DROP_REASONS}
    assert got["first_dropped_line"]["too_long"] == 3889  # 1-based line of the first bad row


def test_prepare_refuses_corrupt_download(tiny_run, tiny_cfg, tmp_path):
    from paper_repro.provenance.manifest import ChecksumError
    from paper_repro.provenance.paths import RunPaths
    from paper_repro.stages import prepare_data

    paths = RunPaths(tmp_path / "corrupt")
    _copy_downloads(tiny_run, paths)
    raw = paths.raw_data("rewardbench")
    raw.write_bytes(raw.read_bytes()[:-10])  # truncated file
    with pytest.raises(ChecksumError, match="rewardbench.jsonl expected sha256:"):
        prepare_data.run(tiny_cfg, paths)
    assert not paths.prepared("train").exists()


def test_render_prints_exact_text_and_ids(tiny_run, tiny_cfg, capsys):
    import argparse

    from paper_repro.data import render

    args = argparse.Namespace(run_dir=str(tiny_run.root), split="train", rows=1)
    assert render.run(tiny_cfg, args) == 0
    out = capsys.readouterr().out
    first = load_pairs(tiny_run.prepared("train"))
    assert f"ids:    {first.chosen[0].tolist()}" in out  # the same ids prepare_data wrote
    assert "text:   '<|begin_of_text|><|user|>\\n" in out and out.count("=== train line") == 1
