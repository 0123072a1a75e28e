"""Reload an exported folder the way users will and compare it with the training-side numbers."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..data.formatting import TULU_CHAT_TEMPLATE
from ..progress import progress
from ..provenance.io import read_json
from .build import VerifyBatch

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


def score_pairs(
    model,
    batch: VerifyBatch,
    pad_token_id: int,
    micro_pairs: int,
    *,
    layout: str = "packed",
    desc: str = "score",
):
    """Rewards [n_pairs] for chosen and rejected, ``micro_pairs`` pairs per forward in the
    training layout ``[chosen; rejected]``. ``layout``: "packed" (one row without padding,
    ``modeling.packed_rewards``, as training runs), "padded" (right-padded rows, attention-mask
    pooling) or "hf" (right-padded rows through ``model(...).logits``, the HF class's own pad-id
    pooling, as users run the exported folder)."""
    import torch

    from ..training.batching import pack_sequences
    from ..training.modeling import packed_attention_mode, packed_rewards, pad_batch, rewards

    out_c, out_r = [], []
    n = len(batch.chosen)
    with torch.no_grad():
        for i in progress(range(0, n, micro_pairs), desc=desc, unit="batch", leave=False):
            c, r = batch.chosen[i : i + micro_pairs], batch.rejected[i : i + micro_pairs]
            if layout == "packed":
                with packed_attention_mode(model):
                    scores = packed_rewards(model, *pack_sequences(c + r))
            else:
                ids, mask = pad_batch(c + r, pad_token_id, side="right")
                if layout == "hf":
                    scores = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
                    scores = scores[:, 0]
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

    from ..training.modeling import DTYPES

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
        Check(
            "config_special_ids",
            [model.config.bos_token_id, model.config.eos_token_id]
            == [exp.bos_token_id, exp.eos_token_id],
            [model.config.bos_token_id, model.config.eos_token_id],
            [exp.bos_token_id, exp.eos_token_id],
        ),
    ]
    if exp.fingerprint is not None:
        from ..data import DataError, check_fingerprint

        try:  # same vocabulary, special ids and probe token ids as the prepared data
            check_fingerprint(exp.fingerprint, tok)
            checks.append(Check("tokenizer_matches_prepared_data", True))
        except DataError as exc:
            checks.append(Check("tokenizer_matches_prepared_data", False, detail=str(exc)))
    return checks


def _portability_checks(folder: Path, model) -> list[Check]:
    """The JSON keys transformers 4.x reads (``build.make_portable``) agree with what 5.x loaded."""
    config = read_json(folder / "config.json")
    tok = read_json(folder / "tokenizer_config.json")
    theta = (model.config.rope_parameters or {}).get("rope_theta")
    return [
        Check(
            "config_rope_theta_for_4x",
            config.get("rope_theta") == theta,
            config.get("rope_theta"),
            theta,
        ),
        Check(
            "tokenizer_class_for_4x",
            tok.get("tokenizer_class") == "PreTrainedTokenizerFast",
            tok.get("tokenizer_class"),
            "PreTrainedTokenizerFast",
        ),
    ]


def checked_with() -> dict[str, str]:
    """Versions of the libraries this process verified the folder with."""
    from importlib import metadata

    return {name: metadata.version(name) for name in ("transformers", "tokenizers", "torch")}


def _weight_checks(model, trained_state: Path, dtype: str) -> list[Check]:
    """Every tensor equals the trained one cast to the export dtype (bitwise for fp32); read one
    tensor at a time so a 70B check needs no second full copy."""
    import torch
    from safetensors import safe_open

    from ..training.modeling import DTYPES

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

    from ..training.modeling import DTYPES

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
    checks += _portability_checks(folder, model)
    checks += _weight_checks(model, exp.trained_state, dtype)

    exp_c, exp_r = score_pairs(model, batch, pad, micro_pairs, desc="exported")
    padded = torch.cat(score_pairs(model, batch, pad, micro_pairs, layout="padded", desc="padded"))
    hf = torch.cat(score_pairs(model, batch, pad, micro_pairs, layout="hf", desc="hf pooling"))
    ref_c, ref_r = exp.ref
    ref_all, exp_all = torch.cat([ref_c, ref_r]), torch.cat([exp_c, exp_r])
    scale = max(1.0, float(ref_all.abs().max()))
    if dtype == "float32":
        tol, pool_tol = FP32_REWARD_ATOL, FP32_REWARD_ATOL
    else:
        tol, pool_tol = BF16_REWARD_RTOL * scale, bf16_ulp(scale)
    reward_diff = _max_abs(exp_all, ref_all)
    pool_diff = _max_abs(hf, padded)
    packing_diff = _max_abs(padded, exp_all)
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
            "model(ids, mask).logits vs attention-mask pooling, both right-padded",
        ),
        Check(
            "packed_matches_padded",
            packing_diff <= tol,
            packing_diff,
            tol,
            "packed forward (training, scoring) vs right-padded rows",
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
        "packed_vs_padded_max_abs_diff": packing_diff,
        "accuracy_training_model": _accuracy(ref_c, ref_r),
        "accuracy_exported": _accuracy(exp_c, exp_r),
        "preference_agreement": float(((exp_c > exp_r) == (ref_c > ref_r)).float().mean()),
        "reward_mean_training_model": float(ref_all.mean()),
        "reward_std_training_model": float(ref_all.std(unbiased=False)),
        "checked_with": checked_with(),
    }
    if dtype != "float32":
        numbers["fp32_reload_max_abs_diff"] = exact_diff
    return Verification(
        passed=all(c.passed for c in checks), dtype=dtype, checks=checks, numbers=numbers
    )
