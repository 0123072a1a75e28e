"""Rollouts: left-padded prompts -> sampled responses, and per-token log-probs / values of them.

Layout of one rollout batch (EasyLM ``ppo_rollout``): ``[left-padded prompt (width P) ; response
(width T)]``. Response position ``t`` is token ``P + t``; its log-prob comes from the logits at
``P + t - 1`` and its value from the value model's output at the same position (EasyLM slices
``[:, P-1:-1]`` for both).

EOS handling: EasyLM's Flax ``generate`` left a pad where the EOS should be, so the trainer
re-inserted EOS after the last non-pad token. HF torch ``generate`` keeps the EOS and pads
*after* it, so here the response is everything up to and including the first EOS (nothing is
inserted, which would double the EOS), and a response that hits ``max_new_tokens`` has no EOS
(it gets ``no_eos_reward``). The response mask is built from the EOS position, not from
``ids != pad``, so a sampled pad id inside a response cannot cut it short.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..training.modeling import pad_batch, position_ids_from_mask, token_scores


@dataclass
class Rollout:
    input_ids: torch.Tensor  # [B, P + T]
    attention_mask: torch.Tensor  # [B, P + T]
    prompt_width: int  # P
    response_mask: torch.Tensor  # [B, T], 1 up to and including the EOS
    has_eos: torch.Tensor  # [B] bool

    @property
    def response_ids(self) -> torch.Tensor:
        return self.input_ids[:, self.prompt_width :]

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def select(self, idx: slice) -> Rollout:
        """Rows ``idx`` with the response trimmed to its longest member (EasyLM keeps the full
        width; trimming trailing all-pad columns changes no masked quantity)."""
        mask = self.response_mask[idx]
        width = int(mask.sum(-1).max())
        end = self.prompt_width + width
        return Rollout(
            self.input_ids[idx, :end],
            self.attention_mask[idx, :end],
            self.prompt_width,
            mask[:, :width],
            self.has_eos[idx],
        )


def left_pad_prompts(
    prompts: Sequence[Sequence[int] | np.ndarray], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    return pad_batch([list(map(int, p)) for p in prompts], pad_id, side="left")


def response_mask_from_eos(
    response: torch.Tensor, eos_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask [B, T], has_eos [B]): 1 up to and including the first EOS; all 1 without EOS."""
    is_eos = response == eos_id
    has_eos = is_eos.any(-1)
    # Tokens strictly after the first EOS: the running count of EOS before this position > 0.
    eos_before = is_eos.long().cumsum(-1) - is_eos.long()
    return (eos_before == 0).long(), has_eos


@torch.no_grad()
def generate(
    policy,
    prompts: Sequence[Sequence[int] | np.ndarray],
    *,
    pad_id: int,
    eos_id: int,
    max_new_tokens: int,
    temperature: float,
    top_k: int,
    do_sample: bool = True,
    seed: int | None = None,
    synced_gpus: bool = False,
) -> Rollout:
    """Sample one response per prompt (EasyLM: temperature 0.7, HF defaults otherwise, so top_k 50
    [spec 9, I]). ``seed`` seeds torch's global generator that HF sampling draws from.
    ``synced_gpus``: under ZeRO-3 every rank keeps stepping (and gathering parameters) until all
    ranks are done, so a rank whose responses end early does not leave the others hanging."""
    from transformers import GenerationConfig

    prompt_ids, prompt_mask = left_pad_prompts(prompts, pad_id)
    device = next(policy.parameters()).device
    prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
    gen_cfg = GenerationConfig(
        do_sample=do_sample,
        temperature=temperature if do_sample else None,
        top_k=top_k if do_sample else None,
        top_p=None,
        max_new_tokens=max_new_tokens,
        pad_token_id=pad_id,
        eos_token_id=eos_id,
        bos_token_id=None,
    )
    if seed is not None:
        torch.manual_seed(seed)
    was_training = policy.training
    policy.eval()
    out = policy.generate(
        input_ids=prompt_ids,
        attention_mask=prompt_mask,
        generation_config=gen_cfg,
        synced_gpus=synced_gpus,
    )
    policy.train(was_training)
    width = prompt_ids.shape[1]
    response = out[:, width:]
    mask, has_eos = response_mask_from_eos(response, eos_id)
    response = response.masked_fill(mask == 0, pad_id)
    return Rollout(
        input_ids=torch.cat([prompt_ids, response], dim=1),
        attention_mask=torch.cat([prompt_mask, mask], dim=1),
        prompt_width=width,
        response_mask=mask,
        has_eos=has_eos,
    )


def response_logits(model, ro: Rollout) -> torch.Tensor:
    """Logits [B, T, V] that predict each response token (positions P-1 .. P+T-2)."""
    out = model(
        input_ids=ro.input_ids,
        attention_mask=ro.attention_mask,
        position_ids=position_ids_from_mask(ro.attention_mask),
        use_cache=False,
    )
    return out.logits[:, ro.prompt_width - 1 : -1, :]


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[token] per position. EasyLM uses the raw logits (no temperature)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def response_values(value_model, ro: Rollout) -> torch.Tensor:
    """Per-token values [B, T] of the response, read one position before each token."""
    scores = token_scores(value_model, ro.input_ids, ro.attention_mask)
    return scores[:, ro.prompt_width - 1 : -1].float()
