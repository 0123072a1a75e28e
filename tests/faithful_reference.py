"""Independent references for the faithful-choice tests (tests/unit/test_faithful_wiring.py and
tests/integration/test_clip_deepspeed.py); not a test module.

EasyLM's update is optax ``clip_by_global_norm(1.0)`` (g * min(1, clip / ||g||_global)) followed
by ``optax.adamw`` (EasyLM ``EasyLM/optimizers.py``), written out here by hand, together with the
tiny models and the fixed PPO rollout both tests use.
"""

from __future__ import annotations

import math

import torch
from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

from paper_repro.ppo import core
from paper_repro.ppo.rollout import Rollout

PAD, EOS = 31, 2
CLIP = 1.0


# --------------------------------------------------------------------------- reference update


def no_decay(name: str) -> bool:
    """EasyLM's weight-decay mask: embeddings and RMSNorm scales are not decayed."""
    return "embed_tokens" in name or "norm" in name


class ReferenceAdamW:
    """optax.adamw as EasyLM builds it, after global-norm clipping, written out by hand."""

    def __init__(self, model: torch.nn.Module, betas, eps: float, weight_decay: float):
        self.model, self.betas, self.eps, self.wd = model, betas, eps, weight_decay
        self.m = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
        self.v = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
        self.t = 0

    @torch.no_grad()
    def step(self, lr: float, clip: float | None) -> float:
        """Applies one update from the ``.grad`` fields; returns the pre-clip global norm."""
        params = [(n, p) for n, p in self.model.named_parameters() if p.grad is not None]
        norm = math.sqrt(sum(float(p.grad.double().pow(2).sum()) for _, p in params))
        scale = 1.0 if clip is None else min(1.0, clip / norm)
        b1, b2 = self.betas
        self.t += 1
        for n, p in params:
            g = p.grad * scale
            self.m[n] = b1 * self.m[n] + (1 - b1) * g
            self.v[n] = b2 * self.v[n] + (1 - b2) * g * g
            m_hat = self.m[n] / (1 - b1**self.t)
            v_hat = self.v[n] / (1 - b2**self.t)
            wd = 0.0 if no_decay(n) else self.wd
            p.mul_(1 - lr * wd)  # decoupled decay (torch AdamW order; optax adds lr*wd*p: same)
            p.sub_(lr * m_hat / (v_hat.sqrt() + self.eps))
            p.grad = None
        return norm


def max_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    pb = dict(b.named_parameters())
    return max(float((p - pb[n]).detach().abs().max()) for n, p in a.named_parameters())


# Two update batches of four pairs (two per rank on two DeepSpeed ranks).
CHOSEN = [
    [[1, 5, 6, 2], [1, 7, 2], [1, 3, 4, 5, 2], [1, 11, 2]],
    [[1, 12, 2], [1, 9, 9, 2], [1, 4, 2], [1, 8, 8, 8, 2]],
]
REJECTED = [
    [[1, 8, 2], [1, 9, 10, 11, 2], [1, 13, 2], [1, 6, 7, 2]],
    [[1, 14, 15, 2], [1, 6, 2], [1, 3, 3, 2], [1, 10, 2]],
]
RM_LRS = (1e-2, 5e-3)


def rm_loss(model, batch) -> torch.Tensor:
    """The update mean of the Bradley-Terry loss, rewards from transformers' own pooling at the
    last non-pad token (right padding), independent of paper_repro's read-out."""
    r = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits.squeeze(-1)
    return -torch.nn.functional.logsigmoid(r[: batch.n_pairs] - r[batch.n_pairs :]).mean()


def tiny_config(**kw) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=32,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        pad_token_id=PAD,
        max_position_embeddings=64,
        **kw,
    )


def tiny_rm(head_scale: float = 1.0) -> LlamaForSequenceClassification:
    """conftest's ``tiny_model_factory`` model (seed 0), its score head scaled by ``head_scale``
    (large rewards -> gradient norms far above the clip)."""
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(tiny_config(num_labels=1)).float().eval()
    with torch.no_grad():
        model.score.weight.mul_(head_scale)
    return model


def tiny_policy() -> LlamaForCausalLM:
    torch.manual_seed(1)
    return LlamaForCausalLM(tiny_config(eos_token_id=EOS)).float().eval()


def fixed_rollout() -> Rollout:
    """Four left-padded prompts (width 4) and responses (width 5): three end at an EOS of
    different lengths, one is cut at the length limit (no EOS)."""
    prompts = [[PAD, 1, 5, 6], [1, 7, 8, 9], [PAD, PAD, 1, 4], [PAD, 1, 3, 3]]
    responses = [[10, 11, EOS, PAD, PAD], [12, EOS, PAD, PAD, PAD], [5, 6, 7, 8, EOS], [9] * 5]
    ids = torch.tensor([p + r for p, r in zip(prompts, responses, strict=True)])
    prompt_mask = (torch.tensor(prompts) != PAD).long()
    response_mask = torch.tensor(
        [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1]]
    )
    has_eos = torch.tensor([True, True, True, False])
    return Rollout(ids, torch.cat([prompt_mask, response_mask], 1), 4, response_mask, has_eos)


def positions(mask: torch.Tensor) -> torch.Tensor:
    return (mask.cumsum(-1) - 1).clamp(min=0)


def response_logps(model, ro: Rollout) -> torch.Tensor:
    logits = model(
        input_ids=ro.input_ids,
        attention_mask=ro.attention_mask,
        position_ids=positions(ro.attention_mask),
    ).logits[:, ro.prompt_width - 1 : -1]
    return torch.log_softmax(logits.double(), -1).gather(-1, ro.response_ids[..., None])[..., 0]


def per_token_scores(model, ro: Rollout) -> torch.Tensor:
    hidden = model.model(
        input_ids=ro.input_ids,
        attention_mask=ro.attention_mask,
        position_ids=positions(ro.attention_mask),
    ).last_hidden_state
    return model.score(hidden)[..., 0].double()


def ppo_reference_update(models: dict, exp, cfg, clip: float | None) -> list[float]:
    """One PPO update of ``models`` ({"policy", "value"}, modified in place) on the scored
    mini-batch ``exp`` (``trainer.Experience``): the EasyLM loss (``core.ppo_loss``), one backward,
    each model's gradient clipped on its own, then AdamW. Returns the pre-clip norms."""
    ro = exp.ro
    logits = models["policy"](
        input_ids=ro.input_ids,
        attention_mask=ro.attention_mask,
        position_ids=positions(ro.attention_mask),
    ).logits[:, ro.prompt_width - 1 : -1]
    logps = torch.log_softmax(logits, -1).gather(-1, ro.response_ids[..., None])[..., 0]
    values = per_token_scores(models["value"], ro).float()[:, ro.prompt_width - 1 : -1]
    parts = core.ppo_loss(
        logps,
        exp.old_logps,
        values,
        exp.old_values,
        exp.advantages,
        exp.returns,
        ro.response_mask,
        cliprange=cfg.cliprange,
        cliprange_value=cfg.cliprange_value,
        vf_coef=cfg.vf_coef,
    )
    parts.total.backward()
    return [
        ReferenceAdamW(models[k], cfg.betas, cfg.eps, cfg.weight_decay).step(cfg.lr, clip)
        for k in ("policy", "value")
    ]
