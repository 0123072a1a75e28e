"""Reward model = SFT trunk + bias-free linear ``score`` head, read at the last real token.

EasyLM (`FlaxLLaMAForSequenceClassificationModule`, docs/fidelity.md §3): position ids
are ``clip(cumsum(mask) - 1, 0)``; the final-norm hidden states go through ``score``; the reward is
the score at the last non-pad token, which is the EOS of the final assistant turn. We compute the
same thing from the attention mask instead of relying on the HF class's pad-id pooling rule (which
changed across transformers versions), and pass mask-derived position ids so a
left-padded row gets exactly the positions of a right-padded one.

Packed forward (``packed_token_scores``): the sequences of a micro batch are concatenated into one
row without padding, position ids restart at 0 for each sequence, and attention is computed for
each sequence separately (``packed_attention``), so a sequence never sees another one. We do not
rely on transformers' own packed-sequence detection (transformers 5.24.0): it infers boundaries
from position ids only when no 2D attention mask and no cache are passed
(``masking_utils._preprocess_mask_arguments``, lines 862-870; ``use_cache`` defaults to the
config's True, which creates a cache and silently turns it off); on sdpa/eager it then builds a
dense row x row mask (``create_causal_mask``, lines 991-1002), so the cost grows with the square of
the row; and flash-attention unpacks from position ids only batches of one row
(``modeling_flash_attention_utils._is_packed_sequence``, lines 564-580), silently attending
across sequences otherwise. Here confinement holds by construction, on CPU and GPU alike (torch
SDPA picks its flash kernel where it can), the attention cost is exactly that of each
sequence alone, and a forward that reaches this attention without sequence lengths raises.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last position whose mask is 1, for left or right padding."""
    seq_len = attention_mask.shape[-1]
    return seq_len - 1 - attention_mask.long().flip(-1).argmax(-1)


def token_scores(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    starts: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-token scalar outputs [B, T] of a ``*ForSequenceClassification`` model (trunk + score);
    ``base_model`` is the trunk of any architecture (``model`` in Llama, ``transformer`` in
    GPT-2). Positions count real tokens from ``starts`` (``[B]``, default 0)."""
    positions = position_ids_from_mask(attention_mask)
    if starts is not None:
        positions = positions + starts.to(positions.device).unsqueeze(-1)
    hidden = model.base_model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=positions,
        use_cache=False,
    ).last_hidden_state
    return model.score(hidden).squeeze(-1)


def packed_position_ids(
    lengths: Sequence[int], device=None, starts: Sequence[int] | None = None
) -> torch.Tensor:
    """``[1, sum(lengths)]`` position ids restarting for each packed sequence, at its entry of
    ``starts`` (default 0)."""
    starts = starts if starts is not None else [0] * len(lengths)
    return torch.cat(
        [torch.arange(s, s + n, device=device) for n, s in zip(lengths, starts, strict=True)]
    ).unsqueeze(0)


PACKED_ATTENTION = "paper_repro_packed"  # name in transformers' AttentionInterface


# Below this length, forward and backward of torch's CPU flash kernel in bf16 take longer than
# those of the math kernel (which computes in fp32); forward alone, flash is faster at every
# length. Measured by bench/attention_kernels.py (2 cores with AMX, torch 2.13).
_CPU_BF16_TRAIN_MATH_BELOW = 256


def _sdpa_kernel(device: str, dtype: torch.dtype, length: int, grad: bool):
    if device == "cpu" and dtype == torch.bfloat16 and grad and length < _CPU_BF16_TRAIN_MATH_BELOW:
        return sdpa_kernel(SDPBackend.MATH)
    return contextlib.nullcontext()


def packed_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    packed_lengths: Sequence[int] | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """Causal attention of each packed sequence on its own. ``query``/``key``/``value`` are
    ``[1, heads, T, head_dim]`` with ``T = sum(packed_lengths)``; returns ``[1, T, heads,
    head_dim]`` as transformers' attention functions do. Each sequence's slice of the row (a view,
    no copy) goes through torch SDPA with ``is_causal``, so a token only ever sees earlier tokens
    of its own sequence, and the attention costs exactly that of each sequence alone. One kernel
    call per sequence is cheap next to the projections around it; batching sequences of similar
    length into one call gains nothing on CPU (the kernels' efficiency depends on the length, not
    on the batch) and costs a gather and padding."""
    if packed_lengths is None or attention_mask is not None:
        raise RuntimeError(
            "packed attention needs the packed sequence lengths and no attention mask; "
            "call modeling.packed_token_scores"
        )
    lengths = [int(n) for n in packed_lengths]
    if query.shape[0] != 1 or sum(lengths) != query.shape[2]:
        raise RuntimeError(
            f"packed lengths sum to {sum(lengths)} but the row is {tuple(query.shape)}"
        )
    gqa = getattr(module, "num_key_value_groups", 1) > 1
    device = query.device.type
    autocast = torch.is_autocast_enabled(device)
    compute = torch.get_autocast_dtype(device) if autocast else query.dtype
    grad = torch.is_grad_enabled() and query.requires_grad
    outs = []
    # split, not slicing: its backward is one concatenation, where each slice's backward would
    # write a zero tensor of the whole row
    for q, k, v in zip(*(x.split(lengths, 2) for x in (query, key, value)), strict=True):
        with _sdpa_kernel(device, compute, q.shape[2], grad):
            out = F.scaled_dot_product_attention(
                q, k, v, dropout_p=dropout, is_causal=True, scale=scaling, enable_gqa=gqa
            )
        outs.append(out.transpose(1, 2))  # [1, n, heads, head_dim]
    return torch.cat(outs, 1), None  # one copy, already in the layout transformers expects


def use_packed_attention(model) -> str:
    """Route every attention layer of ``model`` through ``packed_attention``; returns the previous
    implementation name. transformers looks the implementation up on each call (also in the
    recomputation of activation checkpointing), so a training model keeps it for good."""
    from transformers import AttentionInterface

    AttentionInterface.register(PACKED_ATTENTION, packed_attention)
    previous = model.config._attn_implementation
    model.config._attn_implementation = PACKED_ATTENTION
    return previous


@contextlib.contextmanager
def packed_attention_mode(model):
    """``use_packed_attention`` for the duration of a block (inference: nothing is recomputed
    after it), then the model's own implementation again."""
    previous = use_packed_attention(model)
    try:
        yield model
    finally:
        model.config._attn_implementation = previous


# Model types whose trunk passes extra forward arguments on to the attention function
# (transformers 5.x), which packed scoring needs for the sequence lengths; tests/integration/
# test_any_model.py checks packed against padded rewards for each. Others are scored padded.
PACKED_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "gemma"})


def sliding_window(config) -> int | None:
    """The attention window of a model that uses one (Mistral v0.1's 4096; Qwen2 with
    ``use_sliding_window``), else None: a token sees only the ``window`` newest tokens."""
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None)
    if window and (layer_types is None or "sliding_attention" in layer_types):
        return int(window)
    return None


def supports_packed(model, longest: int | None = None) -> bool:
    """Whether packed scoring gives the model's own rewards: a type in ``PACKED_MODEL_TYPES``, and
    no sliding window shorter than the ``longest`` sequence (``packed_attention`` is plain causal
    attention; None: any length)."""
    window = sliding_window(model.config)
    fits = window is None or (longest is not None and longest <= window)
    return model.config.model_type in PACKED_MODEL_TYPES and hasattr(model, "model") and fits


def packed_token_scores(
    model, input_ids: torch.Tensor, lengths: Sequence[int], starts: Sequence[int] | None = None
) -> torch.Tensor:
    """Per-token scores ``[1, T]`` of a packed row (``model`` in ``use_packed_attention``);
    ``starts``: the first position id of each sequence (default 0)."""
    if model.config._attn_implementation != PACKED_ATTENTION:
        raise RuntimeError(
            "packed forward of a model not in packed attention (use_packed_attention)"
        )
    hidden = model.model(
        input_ids=input_ids,
        position_ids=packed_position_ids(lengths, input_ids.device, starts),
        use_cache=False,
        packed_lengths=tuple(int(n) for n in lengths),
    ).last_hidden_state
    return model.score(hidden).squeeze(-1)


def packed_rewards(
    model, input_ids: torch.Tensor, lengths: Sequence[int], starts: Sequence[int] | None = None
) -> torch.Tensor:
    """Reward of each packed sequence: the score at its last token (the EOS)."""
    ends = torch.tensor(lengths, device=input_ids.device).cumsum(0)
    return packed_token_scores(model, input_ids, lengths, starts)[0, ends - 1]


def pool_last(scores: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """EasyLM pooling (docs/fidelity.md §3): the score at the last non-pad token, i.e. the EOS."""
    rows = torch.arange(scores.shape[0], device=scores.device)
    return scores[rows, last_token_index(attention_mask)]


def rewards(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    starts: torch.Tensor | None = None,
) -> torch.Tensor:
    """Scalar reward per row, pooled at the last non-pad token (the EOS)."""
    return pool_last(token_scores(model, input_ids, attention_mask, starts), attention_mask)


@dataclass(frozen=True)
class PairStats:
    loss: float
    accuracy: float
    reward_chosen_mean: float
    reward_chosen_std: float
    reward_rejected_mean: float
    reward_rejected_std: float
    margin: float


def pair_losses(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """-log sigmoid(r_c - r_r) per pair, in fp32 (EasyLM margin_loss_forward, no margin term)."""
    return -F.logsigmoid(r_chosen.float() - r_rejected.float())


def bradley_terry_loss(
    r_chosen: torch.Tensor, r_rejected: torch.Tensor
) -> tuple[torch.Tensor, PairStats]:
    """Mean of ``pair_losses``. Accuracy uses strict > (a tie counts as wrong), as EasyLM and
    RewardBench do."""
    diff = r_chosen.float() - r_rejected.float()
    loss = pair_losses(r_chosen, r_rejected).mean()
    with torch.no_grad():
        c, r = r_chosen.float(), r_rejected.float()
        stats = PairStats(
            loss=loss.item(),
            accuracy=(c > r).float().mean().item(),
            reward_chosen_mean=c.mean().item(),
            reward_chosen_std=c.std(unbiased=False).item(),
            reward_rejected_mean=r.mean().item(),
            reward_rejected_std=r.std(unbiased=False).item(),
            margin=diff.mean().item(),
        )
    return loss, stats


def pad_batch(
    seqs: list[list[int]], pad_id: int, *, side: str = "right"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad token-id lists to the longest; returns (input_ids, attention_mask)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        sl = slice(0, len(s)) if side == "right" else slice(width - len(s), width)
        ids[i, sl] = torch.tensor(s, dtype=torch.long)
        mask[i, sl] = 1
    return ids, mask


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def init_score_head(model, std: float, seed: int) -> None:
    """Fresh N(0, std) bias-free head from its own seeded generator (EasyLM llama_train_rm.py
    replaces `score` with freshly initialised params; initializer_range 0.02)."""
    gen = torch.Generator().manual_seed(seed)
    weight = model.score.weight
    gathered = contextlib.nullcontext()
    if hasattr(weight, "ds_id"):  # ZeRO-3 partitioned: a plain copy_ would hit an empty shard
        import deepspeed

        gathered = deepspeed.zero.GatheredParameters([weight], modifier_rank=0)
    with gathered, torch.no_grad():
        weight.copy_(torch.randn(weight.shape, generator=gen, dtype=torch.float32) * std)


def load_reward_model_from_base(
    base_dir: str | Path,
    *,
    pad_token_id: int,
    init_std: float,
    seed: int,
    dtype: str = "float32",
    **kwargs,
):
    """The SFT causal LM's trunk with its LM head dropped and a fresh score head (num_labels=1).

    Loads safetensors only, hashed while read where a manifest lists the folder
    (``verified.from_pretrained``); ``lm_head.weight`` in the checkpoint is ignored by design."""
    from transformers import LlamaForSequenceClassification

    from ..provenance.verified import from_pretrained

    model = from_pretrained(
        LlamaForSequenceClassification,
        base_dir,
        num_labels=1,
        pad_token_id=pad_token_id,
        torch_dtype=DTYPES[dtype],
        use_safetensors=True,
        trust_remote_code=False,
        **kwargs,
    )
    if model.score.bias is not None:
        raise ValueError(
            f"{base_dir}: the reward head must be bias-free (EasyLM score has no bias)"
        )
    init_score_head(model, init_std, seed)
    return model
