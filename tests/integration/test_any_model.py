"""``paper-repro eval-rewardbench tiny --model DIR`` on small RMs of several architectures
(GPT-2, Llama, Mistral, Qwen2, Gemma) x the tokenizer quirks of published RMs (tests/rmzoo.py):
every one is scored, named truthfully, with the template actually used, and each reward is the
one reward-bench reads: HF's own forward and pooling on the tokenizer's chat-template text here,
and reward-bench 0.1.4's own pipeline in its transformers 4.51.0 side environment (slow)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
from rmzoo import ARCHS, QUIRKS, build_rm

from paper_repro.fixtures import FIXTURE_ROWS

MATRIX = [(a, q) for a in ARCHS for q in QUIRKS]
# The default suite scores a covering subset (every architecture and every quirk at least once,
# plus the cases the named tests below read); the whole matrix runs in the slow suite.
DEFAULT = {(ARCHS[i % len(ARCHS)], q) for i, q in enumerate(QUIRKS)}
DEFAULT |= {("llama", "eos-pad"), ("llama", "pad+bos+template"), ("llama", "double-bos")}
DEFAULT |= {("gpt2", "no-bos"), ("gpt2", "double-bos")}


def matrix(cases: list[tuple[str, str]]) -> list:
    """``cases`` as parameters, those outside ``DEFAULT`` marked slow."""
    return [pytest.param(*c, marks=() if c in DEFAULT else pytest.mark.slow) for c in cases]


class Lazy(Mapping):
    """``MATRIX`` -> ``make(key)``, each made on first use and kept (the default suite reads only
    the ``DEFAULT`` cases)."""

    def __init__(self, make):
        self._make, self._done = make, {}

    def __getitem__(self, key):
        if key not in self._done:
            self._done[key] = self._make(key)
        return self._done[key]

    def __iter__(self):
        return iter(MATRIX)

    def __len__(self) -> int:
        return len(MATRIX)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """The models of the matrix, each built once when first used (well under a second each)."""
    root = tmp_path_factory.mktemp("zoo")
    return Lazy(lambda key: build_rm(root / key[0] / key[1], *key))


@pytest.fixture(scope="module")
def bench_run(tiny_cfg, tmp_path_factory):
    """A run folder holding only download_data (the raw RewardBench pairs --model reads)."""
    from paper_repro.provenance.paths import RunPaths
    from paper_repro.stages import download_data

    paths = RunPaths(tmp_path_factory.mktemp("anyrm") / "tiny")
    assert download_data.run(tiny_cfg, paths) == 0
    return paths


@pytest.fixture(scope="module")
def scored(zoo, bench_run, tmp_path_factory):
    """The CLI's results of each model, scored when first read: {(arch, quirk): out folder}."""
    from paper_repro.cli import commands as cli

    out_root = tmp_path_factory.mktemp("scored")

    def score(key):
        out = out_root / key[0] / key[1]
        argv = ["eval-rewardbench", "tiny", "--run-dir", str(bench_run.root)]
        assert cli.main([*argv, "--model", str(zoo[key]), "--out", str(out)]) == 0, key
        return out

    return Lazy(score)


def _read(out: Path):
    import pyarrow.parquet as pq

    scores = json.loads((out / "scores.json").read_text())
    board = json.loads((out / "leaderboard.json").read_text())
    return scores, board, pq.read_table(out / "pairs.parquet").to_pandas()


@pytest.mark.parametrize("arch,quirk", matrix(MATRIX))
def test_every_model_is_scored_with_its_own_template(scored, arch, quirk):
    scores, board, pairs = _read(scored[arch, quirk])
    has_template = QUIRKS[quirk].template is not None
    assert scores["n_pairs"] == len(pairs) == FIXTURE_ROWS["rewardbench_filtered.jsonl"]
    assert board["model"] == quirk  # the folder's name, as reward-bench names a local model
    if has_template:
        assert (
            scores["input_mode"] == "tokenizer-template" and board["chat_template"] == "tokenizer"
        )
        assert scores["inputs"]["chat_template"] == QUIRKS[quirk].template or quirk == "double-bos"
    else:  # no template of its own: the Tulu training format, and the leaderboard says so
        assert scores["input_mode"] == "training-format"
        assert board["chat_template"] == "tulu (EasyLM training)"
    assert np.isfinite(pairs["reward_chosen"]).all() and pairs["reward_chosen"].std() > 0


@pytest.mark.parametrize("arch,quirk", matrix([m for m in MATRIX if QUIRKS[m[1]].template]))
def test_rewards_are_hf_own_forward_on_the_template_text(zoo, scored, bench_run, arch, quirk):
    """What reward-bench computes, in this environment: the chat template's text through the
    tokenizer (its own special tokens) and ``model(**inputs).logits``, one text per call (no
    padding, so the pooling rule and positions are the model's own)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = zoo[arch, quirk]
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    if model.config.pad_token_id is None:  # as reward-bench's CLI sets it
        model.config.pad_token_id = tok.pad_token_id or tok.eos_token_id
    _, _, pairs = _read(scored[arch, quirk])
    rows = [json.loads(line) for line in bench_run.raw_data("rewardbench").read_text().splitlines()]
    for i in (0, 57, 191):
        msgs = [{"role": "user", "content": rows[i]["prompt"]}]
        for key in ("chosen", "rejected"):
            text = tok.apply_chat_template(
                [*msgs, {"role": "assistant", "content": rows[i][key]}], tokenize=False
            )
            inputs = tok(text, return_tensors="pt")
            if quirk == "double-bos":  # reward-bench's pipeline masks the first of two BOS
                inputs["attention_mask"][:, 0] = 0
            with torch.no_grad():
                want = model(**inputs).logits[0, 0].item()
            assert pairs[f"reward_{key}"][i] == pytest.approx(want, abs=1e-4), (i, key)


def test_eos_pad_reads_before_the_final_eos(scored):
    """EOS as pad with turns ending in EOS: HF's pooling (so reward-bench) skips the trailing
    EOS; scores.json records where the reward was read."""
    scores, _, _ = _read(scored["llama", "eos-pad"])
    assert (
        scores["inputs"]["reward_read"]["sides_cut"]
        == 2 * FIXTURE_ROWS["rewardbench_filtered.jsonl"]
    )
    assert "<|end_of_text|>" not in scores["inputs"]["pooled_tokens"]
    assert _read(scored["llama", "pad+bos+template"])[0]["inputs"]["reward_read"]["sides_cut"] == 0


def test_bos_as_the_tokenizer_gives_it(scored):
    bos = {q: _read(scored["gpt2", q])[0]["inputs"]["bos"] for q in ("no-bos", "pad+bos+template")}
    assert bos == {"no-bos": "none", "pad+bos+template": "tokenizer"}
    assert _read(scored["gpt2", "double-bos"])[0]["inputs"]["bos"] == "double, first masked"
    # The masked BOS keeps its position: with rotary positions (Llama) the rewards are those of a
    # single BOS; with absolute ones (GPT-2) every token sits one position later, which counts.
    for arch, same in (("llama", True), ("gpt2", False)):
        a, b = (_read(scored[arch, q])[2] for q in ("double-bos", "pad+bos+template"))
        assert np.allclose(a["reward_chosen"], b["reward_chosen"], atol=1e-4) == same, arch


@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen2", "gemma"])
def test_packed_scoring_equals_padded(zoo, arch):
    """Packed scoring is used for these model types only (modeling.PACKED_MODEL_TYPES): the
    rewards equal those of padded batches."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from paper_repro.rewardbench.scorer import score_sequences
    from paper_repro.training.modeling import PACKED_MODEL_TYPES, supports_packed

    model = AutoModelForSequenceClassification.from_pretrained(zoo[arch, "no-pad"]).eval()
    model.config.sliding_window = None  # the zoo's 16 would make the packed rewards differ
    assert model.config.model_type in PACKED_MODEL_TYPES and supports_packed(model)
    gen = torch.Generator().manual_seed(0)
    seqs = [torch.randint(2, 500, (n,), generator=gen).tolist() for n in (5, 17, 9, 30, 1)]
    packed, _ = score_sequences(model, seqs, pad_id=1, token_budget=40, progress=False)
    padded, _ = score_sequences(
        model, seqs, pad_id=1, token_budget=40, packed=False, progress=False
    )
    assert np.allclose(packed, padded, atol=1e-5)


def test_a_sliding_window_shorter_than_a_sequence_is_scored_padded(zoo):
    """Packed attention is plain causal attention: a Mistral whose window (here 8 tokens) is
    shorter than the longest sequence is scored padded, through its own windowed attention (the
    zoo's Mistrals have a 16-token window, so the whole matrix meets it too)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from paper_repro.rewardbench.scorer import score_sequences
    from paper_repro.training.modeling import supports_packed

    model = AutoModelForSequenceClassification.from_pretrained(zoo["mistral", "no-pad"]).eval()
    model.config.sliding_window = 8
    assert supports_packed(model, longest=8) and not supports_packed(model, longest=9)
    assert not supports_packed(model)  # length unknown
    gen = torch.Generator().manual_seed(0)
    seqs = [torch.randint(2, 500, (n,), generator=gen).tolist() for n in (5, 17, 30)]
    kw = dict(pad_id=1, token_budget=40, progress=False)
    padded, _ = score_sequences(model, seqs, packed=False, **kw)
    packed, _ = score_sequences(model, seqs, packed=True, **kw)
    with torch.no_grad():
        own = [model(torch.tensor([s])).logits[0, 0].item() for s in seqs]
    assert np.allclose(padded, own, atol=1e-5)
    assert not np.allclose(packed[1:], own[1:], atol=1e-3)  # the window changed these rewards


def test_an_explicit_input_mode_wins(zoo, bench_run, tmp_path):
    from paper_repro.cli import commands as cli

    out = tmp_path / "out"
    argv = ["eval-rewardbench", "tiny", "--model", str(zoo["gpt2", "no-pad"]), "--out", str(out)]
    # override after the options (argparse alone rejected it as unrecognized)
    assert (
        cli.main([*argv, "--run-dir", str(bench_run.root), "eval.input_mode=training-format"]) == 0
    )
    scores, board, _ = _read(out)
    assert scores["input_mode"] == "training-format"
    assert board["chat_template"] == "tulu (EasyLM training)"


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_matrix_matches_reward_bench_pair_by_pair(zoo, scored, bench_run):
    """reward-bench 0.1.4's own code (its pipeline, its text building, its CLI's settings) in its
    transformers 4.51.0 side environment scores every template model of the matrix; each pair's
    rewards agree to 1e-4 and no pair is judged differently. Models
    without a chat template are not comparable (reward-bench's CLI needs a FastChat template name
    for them)."""
    from paper_repro.rewardbench.rbcheck import (
        compare,
        read_rows,
        reward_bench_scores,
        rewardbench_env,
    )

    keys = sorted(k for k in scored if QUIRKS[k[1]].template is not None)
    assert len(keys) == len(ARCHS) * sum(q.template is not None for q in QUIRKS.values())
    rows = read_rows(bench_run.raw_data("rewardbench"))
    theirs = reward_bench_scores([zoo[k] for k in keys], rows, rewardbench_env())
    failed = set()
    for key, got in zip(keys, theirs, strict=True):
        rec = compare(scored[key], got)
        print(
            f"{key[0]:8} {key[1]:18} ours {100 * rec['ours_accuracy']:6.2f} reward-bench "
            f"{100 * rec['rewardbench_accuracy']:6.2f} max|diff| {rec['reward_max_abs_diff']:.2g}"
        )
        if not rec["passed"]:
            failed.add(key)
    assert not failed, failed
