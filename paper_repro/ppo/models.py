"""The four PPO models (EasyLM ``llama_train_ppo.py``, docs/fidelity.md §9).

- policy: causal LM from the SFT checkpoint (trainable);
- reference: a second copy of the same checkpoint (frozen);
- reward: the trained RM, a ``LlamaForSequenceClassification`` (frozen);
- value: trunk *and* score head copied from the RM (trainable), read per token
  (EasyLM ``FlaxLLaMAForTokenRegression`` loaded from the reward checkpoint).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch

from ..training.modeling import DTYPES


@dataclass
class PPOModels:
    policy: torch.nn.Module
    reference: torch.nn.Module
    reward: torch.nn.Module
    value: torch.nn.Module


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def load_policy(path: str | Path, dtype: str = "float32"):
    from transformers import AutoModelForCausalLM

    from ..provenance.verified import from_pretrained

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{path}: no HF model folder (config.json missing) for the PPO policy"
        )
    model = from_pretrained(  # weights hashed while read (verified.py)
        AutoModelForCausalLM,
        path,
        dtype=DTYPES[dtype],
        use_safetensors=True,
        trust_remote_code=False,
    )
    model.eval()  # Llama has no dropout; eval() keeps it that way for any config
    return model


def load_reward_model(path: str | Path, dtype: str = "float32"):
    from transformers import AutoModelForSequenceClassification

    from ..provenance.verified import from_pretrained

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: no HF reward-model folder (config.json missing)")
    model = from_pretrained(  # weights hashed while read (verified.py)
        AutoModelForSequenceClassification,
        path,
        dtype=DTYPES[dtype],
        use_safetensors=True,
        trust_remote_code=False,
    )
    if model.config.num_labels != 1 or not hasattr(model, "score"):
        raise ValueError(f"{path}: a reward model needs a one-output `score` head (num_labels=1)")
    return model


def value_from_reward(reward_model) -> torch.nn.Module:
    """A trainable deep copy of the RM: same trunk and score head, used per token."""
    value = copy.deepcopy(reward_model)
    value.eval()
    for p in value.parameters():
        p.requires_grad_(True)
    return value


def build_models(policy, reward_model) -> PPOModels:
    """Policy (trainable), frozen reference copy, frozen RM, value model from the RM."""
    reference = freeze(copy.deepcopy(policy))
    value = value_from_reward(reward_model)
    for p in policy.parameters():
        p.requires_grad_(True)
    return PPOModels(policy=policy, reference=reference, reward=freeze(reward_model), value=value)


def check_vocab(policy, reward_model, *, eos_id: int, pad_id: int) -> None:
    """The RM reads policy token ids directly, so both must share one vocabulary."""
    pv, rv = policy.config.vocab_size, reward_model.config.vocab_size
    if pv != rv:
        raise ValueError(
            f"policy vocab {pv} != reward model vocab {rv}: they must share a tokenizer"
        )
    if not 0 <= eos_id < pv or not 0 <= pad_id < pv or eos_id == pad_id:
        raise ValueError(
            f"need distinct EOS ({eos_id}) and pad ({pad_id}) ids inside the vocab ({pv})"
        )
