"""export_rm: the trained fp32 state dict -> a verified HF ``LlamaForSequenceClassification`` folder.

What EasyLM's ``convert_easylm_to_hf.py`` did (reproduction_spec.md section 7: ``score.weight``,
num_labels 1, bf16 safetensors, the Tulu chat template) plus what it missed and later fixed
(spec pitfalls 1-3): an explicit pad id in config *and* tokenizer that never occurs in text
(128255 = ``<|reserved_special_token_250|>`` for Llama 3), checked to be inside the vocabulary.

The folder is built next to the target, reloaded with ``AutoModelForSequenceClassification`` and
checked (every weight equals the trained one, bitwise in fp32 or cast-exact in bf16; the rewards on
held-out pairs match the in-training model's; HF's own pooling agrees with ours); only then is it
renamed into place. A failed check leaves no model folder and exits non-zero (peer pitfalls:
checkpoints that silently lose the reward head, evaluators that score a random head).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..config import ReproConfig, stage_hash, to_dict
from ..formatting import TULU_CHAT_TEMPLATE
from ..io import read_json, sha256_file, sha256_tree, write_json, write_text
from ..paths import RunPaths
from ..tracking import NullTracker, stage_run

REPO_ROOT = Path(__file__).resolve().parents[2]
LICENSE_FILES = ("llama_3_license.txt", "NOTICE")  # shipped verbatim with every exported model
MAX_SHARD = "5GB"  # HF hub convention; a 70B bf16 export is ~28 shards

# Rewards of the reloaded folder vs the in-training fp32 model. fp32: the same weights and the same
# code give the same numbers (we see 0.0); 1e-5 only allows for kernel-order noise.
FP32_REWARD_ATOL = 1e-5
# bf16 as users run it: weights keep 8 significant bits and every matmul/norm output is rounded
# to bf16, so the reward itself is only resolved to one bf16 ulp of its magnitude (0.0625 at
# |r| = 16) and drifts a few ulps through the layers. We allow 5% of the reward scale
# max(1, max|r_fp32|), i.e. 6-13 ulps there. This bound only checks that bf16 inference is sane;
# the discriminating checks are exact: cast-exact weights and the folder loaded in fp32 matching
# the in-process model with the same rounded weights to FP32_REWARD_ATOL.
BF16_REWARD_RTOL = 0.05


class ExportError(RuntimeError):
    """The export or its verification failed; the message names the file or the failed checks."""


@dataclass
class Check:
    name: str
    passed: bool
    value: Any = None
    limit: Any = None
    detail: str = ""


@dataclass
class Verification:
    passed: bool
    dtype: str
    checks: list[Check]
    numbers: dict[str, Any] = field(default_factory=dict)

    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def to_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "dtype": self.dtype,
            "checks": [asdict(c) for c in self.checks],
            **self.numbers,
        }


# --------------------------------------------------------------------------- inputs


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise ExportError(f"{path}: {what} not found")
    return path


def license_files() -> list[Path]:
    """The Llama 3 license and NOTICE of this repository (the Llama 3 license requires shipping
    them with every distributed derivative)."""
    files = [REPO_ROOT / name for name in LICENSE_FILES]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise ExportError(f"license files not found: {missing} (run from a source checkout)")
    return files


def load_trained_state(path: Path, config) -> dict:
    """The trainer's consolidated fp32 state dict, checked against the base config: the peer
    pitfall of a checkpoint without its head (or with an empty ZeRO-3 shard of it) stops here."""
    import torch
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for a truncated file
        raise ExportError(f"{path}: not a readable safetensors file ({exc})") from None
    head = state.get("score.weight")
    if head is None:
        raise ExportError(f"{path}: no 'score.weight' (the reward head is missing from the state)")
    if tuple(head.shape) != (1, config.hidden_size):
        raise ExportError(
            f"{path}: score.weight has shape {tuple(head.shape)}, expected "
            f"(1, {config.hidden_size}) (an unconsolidated ZeRO-3 shard?)"
        )
    if "score.bias" in state:
        raise ExportError(f"{path}: has 'score.bias'; the EasyLM reward head is bias-free")
    for name, t in state.items():
        if t.dtype != torch.float32:
            raise ExportError(f"{path}: {name} is {t.dtype}; the trainer writes fp32 weights")
        if not bool(torch.isfinite(t).all()):
            raise ExportError(f"{path}: {name} holds NaN or Inf")
    if not bool((head != 0).any()):
        raise ExportError(f"{path}: score.weight is all zeros (head never gathered or trained)")
    return state


def prepare_config(base_dir: Path, pad_token_id: int):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(base_dir))
    if config.model_type != "llama":
        raise ExportError(f"{base_dir}/config.json: model_type {config.model_type!r}, need 'llama'")
    if not 0 <= pad_token_id < config.vocab_size:  # spec pitfall 3: a new <pad> at 128256
        raise ExportError(
            f"data.pad_token_id {pad_token_id} is outside the model vocabulary "
            f"({config.vocab_size})"
        )
    config.num_labels = 1
    config.pad_token_id = pad_token_id
    config.architectures = ["LlamaForSequenceClassification"]
    return config


def prepare_tokenizer(base_dir: Path, pad_token_id: int):
    """The base tokenizer with an explicit pad (the token string at the configured id) and the
    Tulu chat template. The pad must be an added special token so no text can produce it."""
    from transformers import AutoTokenizer

    from ..data import DataError, resolve_pad

    tok = AutoTokenizer.from_pretrained(str(base_dir))
    try:
        pad_token = resolve_pad(tok, pad_token_id)
    except DataError as exc:
        raise ExportError(f"{base_dir}: {exc}") from None
    added = tok.added_tokens_decoder.get(pad_token_id)
    if added is None or not added.special:
        raise ExportError(
            f"{base_dir}: pad id {pad_token_id} is the ordinary token {pad_token!r}, "
            "which text can produce; use a reserved special token"
        )
    tok.pad_token = pad_token
    tok.padding_side = "right"
    tok.chat_template = TULU_CHAT_TEMPLATE
    if tok.pad_token_id != pad_token_id:
        raise ExportError(f"{base_dir}: setting pad {pad_token!r} gave id {tok.pad_token_id}")
    return tok


@dataclass
class VerifyBatch:
    split: str
    chosen: list[list[int]]
    rejected: list[list[int]]
    pad_occurrences: int  # over every token of the split, not just the batch
    tokens_scanned: int


def verification_batch(paths: RunPaths, pad_token_id: int, n_pairs: int) -> VerifyBatch:
    """The first ``n_pairs`` held-out pairs (train pairs when there is no held-out split), and a
    scan of the whole split for the pad id (it must never occur in text, spec pitfall 2)."""
    import numpy as np

    from ..data import DataError, load_pairs

    for split in ("heldout", "train"):
        path = paths.prepared(split)
        if not path.is_file():
            continue
        try:
            pairs = load_pairs(path)
        except DataError as exc:
            raise ExportError(str(exc)) from None
        if len(pairs) == 0:
            continue
        every = np.concatenate(pairs.chosen + pairs.rejected)
        n = min(n_pairs, len(pairs))
        return VerifyBatch(
            split=split,
            chosen=[a.tolist() for a in pairs.chosen[:n]],
            rejected=[a.tolist() for a in pairs.rejected[:n]],
            pad_occurrences=int((every == pad_token_id).sum()),
            tokens_scanned=int(every.size),
        )
    raise ExportError(
        f"{paths.prepared('heldout')} and {paths.prepared('train')}: no prepared "
        "pairs to verify the export on (run prepare-data first)"
    )


# --------------------------------------------------------------------------- scoring


def model_from_state(config, state: dict):
    """A ``LlamaForSequenceClassification`` whose parameters *are* ``state`` (no second copy: a
    70B fp32 state is 280 GB). Buffers (rotary frequencies) are built for real."""
    from accelerate import init_empty_weights
    from transformers import LlamaForSequenceClassification

    with init_empty_weights():
        model = LlamaForSequenceClassification(config)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:  # missing/unexpected keys or shape mismatches, named by torch
        raise ExportError(f"trained state does not fit the base architecture: {exc}") from None
    return model.eval()


def cast_parameters(model, dtype) -> None:
    """Cast parameters only. ``model.to(dtype)`` would also round the rotary ``inv_freq`` buffer,
    which a freshly loaded model recomputes in fp32 (that alone moved tiny rewards by 1e-3)."""
    import torch

    with torch.no_grad():
        for p in model.parameters():
            p.data = p.data.to(dtype)


def score_pairs(
    model,
    batch: VerifyBatch,
    pad_token_id: int,
    micro_pairs: int,
    *,
    hf_pooling: bool = False,
    desc: str = "score",
):
    """Rewards [n_pairs] for chosen and rejected, in the training layout ([chosen; rejected] in
    one right-padded forward per micro batch). ``hf_pooling`` reads ``model(...).logits`` (the HF
    class's own pad-id pooling) instead of our attention-mask pooling."""
    import torch
    from tqdm import tqdm

    from ..modeling import pad_batch, rewards

    out_c, out_r = [], []
    n = len(batch.chosen)
    with torch.no_grad():
        for i in tqdm(range(0, n, micro_pairs), desc=desc, unit="batch", leave=False):
            c, r = batch.chosen[i : i + micro_pairs], batch.rejected[i : i + micro_pairs]
            ids, mask = pad_batch(c + r, pad_token_id, side="right")
            if hf_pooling:
                scores = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, 0]
            else:
                scores = rewards(model, ids, mask)
            scores = scores.float()
            out_c.append(scores[: len(c)])
            out_r.append(scores[len(c) :])
    return torch.cat(out_c), torch.cat(out_r)


def _max_abs(a, b) -> float:
    return float((a.double() - b.double()).abs().max())


def _accuracy(c, r) -> float:
    return float((c > r).float().mean())  # strict >, as EasyLM and RewardBench


# --------------------------------------------------------------------------- verification


@dataclass
class Expected:
    """Training-side facts the reloaded folder must reproduce."""

    trained_state: Path
    pad_token_id: int
    bos_token_id: int
    eos_token_id: int
    ref: tuple  # (chosen, rejected) rewards of the in-training fp32 model
    rounded: tuple  # same model, weights rounded to the export dtype, fp32 compute
    fingerprint: Path | None = None


def bf16_ulp(x: float) -> float:
    """Spacing of bf16 numbers (8 significant bits) at magnitude ``x``."""
    return 2.0 ** (math.floor(math.log2(max(abs(x), 1e-30))) - 7)


def _reload(folder: Path, dtype: str):
    from transformers import AutoModelForSequenceClassification

    from ..modeling import DTYPES

    model, info = AutoModelForSequenceClassification.from_pretrained(
        str(folder),
        dtype=DTYPES[dtype],
        use_safetensors=True,
        output_loading_info=True,
        trust_remote_code=False,
    )
    return model.eval(), {k: sorted(v) for k, v in info.items() if v}


def _tokenizer_checks(folder: Path, model, exp: Expected, batch: VerifyBatch) -> list[Check]:
    from transformers import AutoTokenizer

    pad = exp.pad_token_id
    tok = AutoTokenizer.from_pretrained(str(folder))
    seqs = batch.chosen + batch.rejected
    # Training format: BOS + Tulu text ending in EOS, so the pooled (last real) token is the EOS.
    bad_ends = sum(s[0] != exp.bos_token_id or s[-1] != exp.eos_token_id for s in seqs)
    checks = [
        Check(
            "config_pad_token_id", model.config.pad_token_id == pad, model.config.pad_token_id, pad
        ),
        Check(
            "tokenizer_pad_token_id",
            tok.pad_token_id == pad,
            tok.pad_token_id,
            pad,
            repr(tok.pad_token),
        ),
        Check("pad_id_in_vocab", pad < model.config.vocab_size, pad, model.config.vocab_size),
        Check(
            "pad_id_absent_from_text",
            batch.pad_occurrences == 0,
            batch.pad_occurrences,
            0,
            f"{batch.tokens_scanned} tokens of {batch.split}",
        ),
        Check("chat_template_tulu", tok.chat_template == TULU_CHAT_TEMPLATE),
        Check(
            "special_ids",
            [tok.bos_token_id, tok.eos_token_id] == [exp.bos_token_id, exp.eos_token_id],
            [tok.bos_token_id, tok.eos_token_id],
            [exp.bos_token_id, exp.eos_token_id],
        ),
        Check("rows_bos_to_eos", bad_ends == 0, bad_ends, 0),
    ]
    if exp.fingerprint is not None:
        from ..data import DataError, check_fingerprint

        try:  # same vocabulary, special ids and probe token ids as the prepared data
            check_fingerprint(exp.fingerprint, tok)
            checks.append(Check("tokenizer_matches_prepared_data", True))
        except DataError as exc:
            checks.append(Check("tokenizer_matches_prepared_data", False, detail=str(exc)))
    return checks


def _weight_checks(model, trained_state: Path, dtype: str) -> list[Check]:
    """Every tensor equals the trained one cast to the export dtype (bitwise for fp32); read one
    tensor at a time so a 70B check needs no second full copy."""
    import torch
    from safetensors import safe_open

    from ..modeling import DTYPES

    reloaded = model.state_dict()
    mismatched, head_diff = [], math.inf
    with safe_open(str(trained_state), framework="pt") as f:
        for name in f.keys():
            want = f.get_tensor(name).to(DTYPES[dtype])
            got = reloaded.get(name)
            if got is None or got.shape != want.shape:
                mismatched.append(name)
                continue
            if not torch.equal(got, want):
                mismatched.append(name)
            if name == "score.weight":
                head_diff = _max_abs(got, want)
    how = "bitwise" if dtype == "float32" else "cast-exact (fp32 -> bf16)"
    return [
        Check("score_head_equal", head_diff == 0.0, head_diff, 0.0, how),
        Check("all_weights_equal", not mismatched, len(mismatched), 0, ", ".join(mismatched[:5])),
    ]


def verify_folder(
    folder: Path, dtype: str, exp: Expected, batch: VerifyBatch, micro_pairs: int
) -> Verification:
    """Reload ``folder`` the way users will and compare it with the training-side numbers.

    Two reward comparisons: (1) exact -- the folder loaded in fp32 reproduces the in-process model
    with the same (rounded) weights to FP32_REWARD_ATOL, which pins config, pooling and loading;
    (2) as used -- the folder in its own dtype vs the in-training fp32 model (identical to (1)
    for an fp32 export; a precision bound for bf16)."""
    import torch

    from ..modeling import DTYPES

    checks: list[Check] = []
    pad = exp.pad_token_id
    rounded = torch.cat(exp.rounded)
    if dtype != "float32":
        model, problems = _reload(folder, "float32")
        up = torch.cat(score_pairs(model, batch, pad, micro_pairs, desc="reload fp32"))
        exact_diff = _max_abs(up, rounded)
        del model
        checks.append(
            Check(
                "fp32_reload_matches_rounded_weights",
                exact_diff <= FP32_REWARD_ATOL,
                exact_diff,
                FP32_REWARD_ATOL,
                "folder in fp32 vs in-process model",
            )
        )

    model, problems = _reload(folder, dtype)
    checks += [
        Check("reload_all_weights_present", not problems, detail=json.dumps(problems)),
        Check(
            "class", type(model).__name__ == "LlamaForSequenceClassification", type(model).__name__
        ),
        Check("num_labels", model.config.num_labels == 1, model.config.num_labels, 1),
        Check("dtype", model.dtype == DTYPES[dtype], str(model.dtype), dtype),
    ]
    checks += _tokenizer_checks(folder, model, exp, batch)
    checks += _weight_checks(model, exp.trained_state, dtype)

    exp_c, exp_r = score_pairs(model, batch, pad, micro_pairs, desc="exported")
    hf_c, hf_r = score_pairs(model, batch, pad, micro_pairs, hf_pooling=True, desc="hf pooling")
    ref_c, ref_r = exp.ref
    ref_all, exp_all = torch.cat([ref_c, ref_r]), torch.cat([exp_c, exp_r])
    scale = max(1.0, float(ref_all.abs().max()))
    if dtype == "float32":
        tol, pool_tol = FP32_REWARD_ATOL, FP32_REWARD_ATOL
    else:
        tol, pool_tol = BF16_REWARD_RTOL * scale, bf16_ulp(scale)
    reward_diff = _max_abs(exp_all, ref_all)
    pool_diff = _max_abs(torch.cat([hf_c, hf_r]), exp_all)
    checks += [
        Check(
            "rewards_match_training",
            reward_diff <= tol,
            reward_diff,
            tol,
            f"{len(ref_all)} rewards ({dtype}) vs the in-training fp32 model",
        ),
        Check(
            "hf_pooling_matches_mask_pooling",
            pool_diff <= pool_tol,
            pool_diff,
            pool_tol,
            "model(ids, mask).logits with right padding vs attention-mask pooling",
        ),
    ]
    numbers = {
        "verify_split": batch.split,
        "verify_pairs": len(batch.chosen),
        "verify_tokens": sum(len(s) for s in batch.chosen + batch.rejected),
        "reward_max_abs_diff": reward_diff,
        "reward_mean_abs_diff": float((exp_all.double() - ref_all.double()).abs().mean()),
        "reward_tolerance": tol,
        "reward_scale": scale,
        "hf_pooling_max_abs_diff": pool_diff,
        "accuracy_training_model": _accuracy(ref_c, ref_r),
        "accuracy_exported": _accuracy(exp_c, exp_r),
        "preference_agreement": float(((exp_c > exp_r) == (ref_c > ref_r)).float().mean()),
        "reward_mean_training_model": float(ref_all.mean()),
        "reward_std_training_model": float(ref_all.std(unbiased=False)),
    }
    if dtype != "float32":
        numbers["fp32_reload_max_abs_diff"] = exact_diff
    return Verification(
        passed=all(c.passed for c in checks), dtype=dtype, checks=checks, numbers=numbers
    )


# --------------------------------------------------------------------------- model card

ARCH_NAMES = {"llama3-70b": "70B", "llama3-8b": "8B", "tiny": "tiny"}


def model_name(cfg: ReproConfig) -> str:
    """The Llama 3 license requires derivative model names to start with "Llama 3"."""
    return f"Llama 3 Tulu 2 {ARCH_NAMES[cfg.model.arch]} UF mean RM (paper-repro, {cfg.preset})"


def _flat_metrics(obj: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_flat_metrics(v, f"{prefix}{k}."))
    elif isinstance(obj, int | float | str | bool) or obj is None:
        out[prefix[:-1]] = obj
    return out


def model_card(
    cfg: ReproConfig,
    summary: dict[str, Any],
    verification: Verification,
    provenance: dict[str, Any],
) -> str:
    import yaml

    name = model_name(cfg)
    metrics = "\n".join(
        f"| {k} | {v:.6g} |" if isinstance(v, float) else f"| {k} | {v} |"
        for k, v in _flat_metrics(summary).items()
    )
    v = verification.numbers
    resolved = yaml.safe_dump(
        {k: to_dict(cfg)[k] for k in ("model", "data", "rm")}, sort_keys=False
    )
    tiny_note = (
        "\n> **Smoke-scale model.** The `tiny` preset builds a Llama of ~140k parameters locally; it "
        "is not derived from Meta Llama 3 weights and its numbers say nothing about the 70B model.\n"
        if cfg.model.arch == "tiny"
        else ""
    )
    front = {
        "license": "llama3",
        "license_name": "Meta Llama 3 Community License",
        "license_link": "llama_3_license.txt",
        "base_model": cfg.model.hub_id,
        "datasets": [cfg.data.preference.hub_id],
        "language": ["en"],
        "tags": ["reward-model", "tulu-2.5", "paper-repro"],
        "pipeline_tag": "text-classification",
    }
    return f"""---
{yaml.safe_dump(front, sort_keys=False).strip()}
---

# {name}

A Bradley-Terry reward model reproducing `allenai/llama-3-tulu-2-70b-uf-mean-rm` (Ivison et al.,
"Unpacking DPO and PPO", arXiv 2406.09279) with the paper-repro pipeline: the SFT base
`{cfg.model.hub_id}` with its LM head replaced by a bias-free linear `score` head, trained on
`{cfg.data.preference.hub_id}` / `{cfg.data.preference.split}`.
{tiny_note}
**Built with Meta Llama 3.** Meta Llama 3 is licensed under the Meta Llama 3 Community License,
Copyright © Meta Platforms, Inc. All Rights Reserved; the license is included as
`llama_3_license.txt`, with attribution in `NOTICE`.

## How to score (the training format)

The reward was trained on **BOS + Tulu text ending in EOS, no trailing newline**, read at the EOS
(the last non-pad token). Build that string yourself and tokenize it with
`add_special_tokens=False`:

```python
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

tok = AutoTokenizer.from_pretrained(MODEL_DIR)
rm = AutoModelForSequenceClassification.from_pretrained(MODEL_DIR, dtype=torch.{cfg.model.dtype})
text = tok.bos_token + "<|user|>\\nHow are you?\\n<|assistant|>\\nFine, thanks." + tok.eos_token
batch = tok([text], add_special_tokens=False, padding=True, return_tensors="pt")
reward = rm(**batch).logits[:, 0]  # pooled at the last non-pad token = the EOS
```

Multi-turn: `<|system|>\\n…\\n`, `<|user|>\\n…\\n`, `<|assistant|>\\n…<EOS>\\n` per turn, contents
stripped, the whole string stripped, BOS prepended. The pad token is
`{verification.numbers.get("pad_token")}` (id {cfg.data.pad_token_id}), set in both `config.json`
and the tokenizer; it never occurs in text, so HF's pooling lands on the EOS with either padding
side. The tokenizer's chat template (Tulu) renders a newline **after** the EOS and no BOS; add the
BOS and drop that newline to match training (reproduction_spec.md pitfalls 1 and 4).

## Final training metrics (`train_rm/summary.json`)

| metric | value |
|---|---|
{metrics}

## Export verification (`export_rm/verification.json`)

Weights ({verification.dtype}): every tensor equals the trained fp32 weights
{"bitwise" if verification.dtype == "float32" else "cast to bf16 (cast-exact)"}; the reloaded
folder has every weight including `score.weight`. On {v["verify_pairs"]} `{v["verify_split"]}` pairs
the rewards differ from the in-training fp32 model by at most {v["reward_max_abs_diff"]:.3g}
(tolerance {v["reward_tolerance"]:.3g}); HF's pooling agrees with attention-mask pooling to
{v["hf_pooling_max_abs_diff"]:.3g}. Pairwise accuracy: training model
{v["accuracy_training_model"]:.4f}, exported {v["accuracy_exported"]:.4f}.

## Resolved configuration

```yaml
{resolved.strip()}
```

## Provenance

```json
{json.dumps(provenance, indent=2, sort_keys=True)}
```
"""


# --------------------------------------------------------------------------- the stage


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def export(cfg: ReproConfig, paths: RunPaths, tracker: NullTracker | None = None) -> Verification:
    """Build, verify and publish ``paths.rm_model``; raises ExportError (and leaves no model
    folder) when anything does not check out."""
    import torch

    tracker = tracker or NullTracker()
    t0 = time.perf_counter()
    target, pad_id, dtype = paths.rm_model, cfg.data.pad_token_id, cfg.model.dtype
    # Our declared outputs: a rerun replaces them, a failure must not leave stale ones behind.
    for stale in (target, paths.export_verification):
        _remove(stale)
    base = _require(paths.base_model, "SFT base model folder")
    _require(base / "config.json", "SFT base config")
    state_path = _require(paths.trained_state, "trained state (run train-rm first)")
    summary = read_json(_require(paths.train_summary, "training summary"))
    licenses = license_files()

    config = prepare_config(base, pad_id)
    tok = prepare_tokenizer(base, pad_id)
    state = load_trained_state(state_path, config)
    batch = verification_batch(paths, pad_id, cfg.export.verify_pairs)
    print(
        f"export_rm: {len(state)} tensors from {state_path}; verifying on {len(batch.chosen)} "
        f"{batch.split} pairs; exporting {dtype}"
    )

    # The in-training model: fp32, built straight from the trained tensors.
    model = model_from_state(config, state)
    micro = cfg.rm.micro_batch_pairs
    ref_c, ref_r = score_pairs(model, batch, pad_id, micro, desc="training")
    del state

    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    _remove(tmp)
    tmp.mkdir(parents=True)
    try:
        if dtype == "bfloat16":
            cast_parameters(model, torch.bfloat16)
        model.save_pretrained(str(tmp), safe_serialization=True, max_shard_size=MAX_SHARD)
        if dtype == "bfloat16":  # exact upcast: the trained weights rounded to bf16, fp32 compute
            cast_parameters(model, torch.float32)
            rounded = score_pairs(model, batch, pad_id, micro, desc="rounded fp32")
        else:
            rounded = (ref_c, ref_r)
        del model
        tok.save_pretrained(str(tmp))
        for f in licenses:
            shutil.copyfile(f, tmp / f.name)
        expected = Expected(
            trained_state=state_path,
            pad_token_id=pad_id,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            ref=(ref_c, ref_r),
            rounded=rounded,
            fingerprint=paths.fingerprint if paths.fingerprint.is_file() else None,
        )
        ver = verify_folder(tmp, dtype, expected, batch, micro)
        ver.numbers.update(
            pad_token=tok.pad_token, pad_token_id=pad_id, vocab_size=config.vocab_size
        )
        tracker.log_metrics(
            {k: float(v) for k, v in ver.numbers.items() if isinstance(v, int | float)}
        )
        if not ver.passed:
            lines = [
                f"{c.name}: value {c.value!r}, limit {c.limit!r} {c.detail}".rstrip()
                for c in ver.failed()
            ]
            raise ExportError(f"verification of {target} failed:\n  " + "\n  ".join(lines))
        provenance = {
            "trained_state": str(state_path.resolve()),
            "trained_state_sha256": sha256_file(state_path),
            "stage_config_hash": stage_hash(cfg, "export_rm"),
            "preset": cfg.preset,
        }
        write_text(tmp / "README.md", model_card(cfg, summary, ver, provenance))
        ver.numbers.update(
            provenance=provenance,
            files=sha256_tree(tmp),
            export_seconds=round(time.perf_counter() - t0, 3),
            model_dir=str(target.resolve()),
        )
        for f in tmp.iterdir():  # mkstemp-style 0600 files would be unreadable to co-workers
            f.chmod(0o644)
        os.replace(tmp, target)  # the only moment the model folder appears
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(tmp)
        raise
    write_json(paths.export_verification, ver.to_json())
    return ver


def run(cfg: ReproConfig, paths: RunPaths) -> int:
    try:
        with stage_run(cfg, paths, "export_rm") as tr:
            ver = export(cfg, paths, tr)
            tr.log_metrics({"export_seconds": ver.numbers["export_seconds"]})
            tr.log_artifact(paths.export_verification)
            tr.log_artifact(paths.rm_model / "README.md")
            for name in sorted(ver.numbers["files"]):
                if name.endswith(".safetensors"):
                    tr.log_file_ref(f"rm_model/{name}", paths.rm_model / name)
    except ExportError as exc:
        print(f"export_rm: FAILED: {exc}", file=sys.stderr)
        return 1
    v = ver.numbers
    print(
        f"export_rm: {paths.rm_model} ({ver.dtype}) verified: reward max |diff| "
        f"{v['reward_max_abs_diff']:.3g} <= {v['reward_tolerance']:.3g}, HF pooling "
        f"{v['hf_pooling_max_abs_diff']:.3g}, accuracy {v['accuracy_exported']:.4f} on "
        f"{v['verify_pairs']} {v['verify_split']} pairs, {v['export_seconds']:.1f} s"
    )
    return 0
