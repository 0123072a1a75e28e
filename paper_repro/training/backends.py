"""Two ways to run the same training loop: plain torch (one process) and DeepSpeed (ZeRO-2/3).

Both expose the small surface ``engine.Trainer`` needs: per-token scores of a micro batch (padded
or packed), a backward pass whose gradients are summed over micro batches and ranks (the trainer
hands in each micro batch's share of the update-group mean), one optimizer update at a given lr
returning the pre-clip global gradient norm, cross-rank reductions, checkpoint save/load into a
folder, and the consolidated fp32 state dict with HF key names.

Optimiser semantics follow EasyLM (docs/fidelity.md §3): global-norm clipping, then
AdamW (decoupled weight decay, eps outside the square root) with weight decay masked off the
embeddings and the RMSNorm scales. torch's ``AdamW`` is the same update rule as ``optax.adamw``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .batching import Batch
from .modeling import packed_token_scores, token_scores, use_packed_attention


class ScoreModule(nn.Module):
    """Per-token scores of a ``LlamaForSequenceClassification``: ``[B, T]`` of a padded batch
    (mask-derived position ids, ``modeling.token_scores``) or ``[1, T]`` of a packed row
    (``modeling.packed_token_scores``). DeepSpeed wraps this module, so the whole forward runs
    through the engine (ZeRO-3 gathers parameters in module hooks)."""

    def __init__(self, model: nn.Module, packed: bool = False):
        super().__init__()
        self.model = model
        if packed:
            use_packed_attention(model)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        lengths: tuple[int, ...] | None = None,
    ) -> torch.Tensor:
        if lengths is not None:
            return packed_token_scores(self.model, input_ids, lengths)
        return token_scores(self.model, input_ids, attention_mask)


def weight_decay_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """EasyLM masks weight decay off embeddings and norm scales (``get_weight_decay_exclusions``);
    every other matrix (attention, MLP, score head) decays. Matters only when weight_decay > 0."""
    no_decay: set[int] = set()
    for module in model.modules():
        if isinstance(module, nn.Embedding) or "RMSNorm" in type(module).__name__:
            no_decay.update(id(p) for p in module.parameters(recurse=False))
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if id(p) not in no_decay], "weight_decay": weight_decay},
        {"params": [p for p in params if id(p) in no_decay], "weight_decay": 0.0},
    ]


def make_adamw(model: nn.Module, rm) -> torch.optim.AdamW:
    """``rm``: an ``RMTrainConfig``. lr is set before every update from the schedule."""
    return torch.optim.AdamW(
        weight_decay_groups(model, rm.weight_decay),
        lr=0.0,
        betas=(rm.betas[0], rm.betas[1]),
        eps=rm.eps,
    )


def clip_by_global_norm(params: list[nn.Parameter], max_norm: float) -> float:
    """optax.clip_by_global_norm: scale by max_norm / norm only when norm >= max_norm. Returns
    the norm before clipping (inf/nan when a gradient is not finite; then nothing is scaled)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    norm = torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])
    )
    value = float(norm)
    if value == value and value != float("inf") and value >= max_norm:
        for g in grads:
            g.mul_(max_norm / norm)
    return value


# --------------------------------------------------------------------------- plain torch


class TorchBackend:
    """One process, CPU or one GPU. fp32 master weights; with ``compute_dtype='bfloat16'`` the
    forward runs under bf16 autocast (EasyLM: bf16 compute, fp32 params and moments). ``packed``
    switches the model to packed attention (then it only takes packed batches)."""

    name = "torch"
    rank = 0
    world_size = 1

    def __init__(
        self,
        model: nn.Module,
        rm,
        *,
        packed: bool = False,
        compute_dtype: str = "float32",
        device: str | torch.device | None = None,
    ):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if any(p.dtype != torch.float32 for p in model.parameters()):
            raise ValueError(
                "the torch backend keeps fp32 master weights; load the model in float32"
            )
        self.module = ScoreModule(model, packed).to(self.device)
        self.hf_model = model
        if rm.activation_checkpointing:
            model.activation_checkpointing_enable(
                activation_checkpointing_kwargs={"use_reentrant": False}
            )
        self.optimizer = make_adamw(model, rm)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.grad_clip = rm.grad_clip
        self.autocast = compute_dtype == "bfloat16"

    # forward / backward / update ------------------------------------------------------
    def train(self) -> None:
        self.module.train()

    def eval(self) -> None:
        self.module.eval()

    def scores(self, batch: Batch) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            return self.module(**batch.model_inputs()).float()

    def backward(self, loss: torch.Tensor, last: bool) -> None:
        """``loss``: this micro batch's share of the update mean (sum of its pair losses over the
        update's pair count); gradients add up. ``last``: the rank's last micro batch."""
        loss.backward()

    def step(self, lr: float) -> float:
        norm = clip_by_global_norm(self.params, self.grad_clip)
        if norm == norm and norm != float("inf"):  # a non-finite update is never applied
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    # reductions (trivial in one process) ------------------------------------------------
    def all_true(self, flag: bool) -> bool:
        return bool(flag)

    def any_true(self, flag: bool) -> bool:
        return bool(flag)

    def sum(self, value: float) -> float:
        return value

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def barrier(self) -> None:
        pass

    # state -------------------------------------------------------------------------------
    def save_checkpoint(self, folder: Path) -> None:
        torch.save(
            {"model": self.hf_model.state_dict(), "optimizer": self.optimizer.state_dict()},
            folder / "torch_state.pt",
        )

    def load_checkpoint(self, folder: Path) -> None:
        from .checkpoints import load_torch

        state = load_torch(folder / "torch_state.pt", map_location=self.device)
        self.hf_model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().float().cpu().clone() for k, v in self.hf_model.state_dict().items()}

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------- DeepSpeed


def deepspeed_config(rm, *, world_size: int, compute_dtype: str) -> dict[str, Any]:
    """DeepSpeed config generated from the training config (logged by the stage). Batch sizes
    count pairs and only feed DeepSpeed's bookkeeping: the trainer scales each loss itself and
    marks the accumulation boundary (packed micro batches vary in number per update)."""
    accumulation = rm.total_batch_pairs // (rm.micro_batch_pairs * world_size)
    zero: dict[str, Any] = {"stage": rm.zero_stage}
    if rm.zero_stage == 3:
        zero.update(
            overlap_comm=True,
            contiguous_gradients=True,
            stage3_gather_16bit_weights_on_model_save=False,  # we consolidate fp32 master weights
        )
    elif rm.zero_stage in (1, 2):
        zero.update(overlap_comm=True, contiguous_gradients=True)
    return {
        "train_batch_size": rm.total_batch_pairs,
        "train_micro_batch_size_per_gpu": rm.micro_batch_pairs,
        "gradient_accumulation_steps": accumulation,
        "gradient_clipping": rm.grad_clip,
        "bf16": {"enabled": compute_dtype == "bfloat16"},
        "fp16": {"enabled": False},
        "zero_optimization": zero,
        # our torch AdamW instead of DeepSpeed's fused ops: no op compilation, same update rule
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }


def init_deepspeed_distributed():
    """Start (or join) the process group DeepSpeed uses; returns ``(torch.distributed, rank,
    world_size)``."""
    import deepspeed
    import torch.distributed as dist

    # DeepSpeed 0.19 calls torch.distributed collectives that torch 2.13 flags as deprecated,
    # once per call: hundreds of identical lines per update otherwise.
    warnings.filterwarnings(
        "ignore",
        message=r".*is deprecated\. Please use `torch\.distributed",
        category=FutureWarning,
    )
    ensure_dist_env()
    deepspeed.init_distributed()
    return dist, dist.get_rank(), dist.get_world_size()


def safe_checkpoint_loads(engine) -> None:
    """Make a DeepSpeed engine read its checkpoints without unpickling code. DeepSpeed 0.19.8 loads
    every checkpoint file through ``engine.checkpoint_engine.load``, whose default
    (``TorchCheckpointEngine``) calls ``torch.load(weights_only=False)``: a planted file would run
    code. Instead: ``weights_only=True`` with exactly the two DeepSpeed classes a ZeRO optimizer
    file holds allowed (``torch.serialization.get_unsafe_globals_in_checkpoint`` of our ZeRO-2/3
    files lists ``LossScaler`` and ``ZeroStageEnum``; ``DynamicLossScaler`` is fp16's scaler)."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum

    from .checkpoints import load_torch

    allowed = (LossScaler, DynamicLossScaler, ZeroStageEnum)

    def load(path: str, map_location=None):
        return load_torch(Path(path), map_location=map_location, safe_globals=allowed)

    engine.checkpoint_engine.load = load


def ensure_dist_env() -> None:
    """A single process without a launcher still needs the torch.distributed rendezvous env
    (otherwise DeepSpeed goes looking for mpi4py)."""
    if "WORLD_SIZE" in os.environ:
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(
        RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )


class DeepSpeedBackend:
    """DeepSpeed ZeRO-1/2/3 under torchrun / srun. ``load_model`` is called after a
    ``HfDeepSpeedConfig`` is alive, so with ZeRO-3 ``from_pretrained`` partitions the weights as
    it loads them and a 70B model never sits whole on one rank."""

    name = "deepspeed"

    def __init__(
        self,
        load_model: Callable[[], nn.Module],
        rm,
        *,
        packed: bool = False,
        compute_dtype: str = "float32",
    ):
        import deepspeed
        from transformers.integrations import HfDeepSpeedConfig

        self.dist, self.rank, self.world_size = init_deepspeed_distributed()
        self.config = deepspeed_config(rm, world_size=self.world_size, compute_dtype=compute_dtype)
        # Must stay referenced while from_pretrained runs (transformers checks it through a weakref).
        self._hf_ds_config = HfDeepSpeedConfig(self.config) if rm.zero_stage == 3 else None
        model = load_model()
        if rm.activation_checkpointing:
            model.activation_checkpointing_enable(
                activation_checkpointing_kwargs={"use_reentrant": False}
            )
        module = ScoreModule(model, packed)
        self.engine, self.optimizer, _, _ = deepspeed.initialize(
            model=module, optimizer=make_adamw(model, rm), config=self.config
        )
        safe_checkpoint_loads(self.engine)
        self.hf_model = model
        self.device = self.engine.device

    def train(self) -> None:
        self.engine.train()

    def eval(self) -> None:
        self.engine.eval()

    def scores(self, batch: Batch) -> torch.Tensor:
        return self.engine(**batch.model_inputs()).float()

    def backward(self, loss: torch.Tensor, last: bool) -> None:
        """As ``TorchBackend.backward``. DeepSpeed averages gradients over ranks, hence the factor
        world size; no division by its fixed accumulation count (``scale_wrt_gas=False``), and
        the boundary (gradient reduction before ``step``) is set explicitly, since the number of
        packed micro batches changes from update to update (the same on every rank)."""
        self.engine.set_gradient_accumulation_boundary(last)
        self.engine.backward(loss * self.world_size, scale_wrt_gas=False)

    def step(self, lr: float) -> float:
        for group in self.engine.optimizer.param_groups:
            group["lr"] = lr
        self.engine.step()
        norm = self.engine.get_global_grad_norm()
        return float(norm) if norm is not None else float("nan")

    def _reduce(self, value: float, op) -> float:
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        self.dist.all_reduce(t, op=op)
        return float(t.item())

    def all_true(self, flag: bool) -> bool:
        return self._reduce(1.0 if flag else 0.0, self.dist.ReduceOp.MIN) > 0.5

    def any_true(self, flag: bool) -> bool:
        return self._reduce(1.0 if flag else 0.0, self.dist.ReduceOp.MAX) > 0.5

    def sum(self, value: float) -> float:
        return self._reduce(value, self.dist.ReduceOp.SUM)

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        """All ranks' 1-D tensors in rank order; lengths may differ (packed micro batches spread
        an update's pairs unevenly), so each is padded to the longest for the collective."""
        n = torch.tensor([t.numel()], device=t.device)
        sizes = [torch.empty_like(n) for _ in range(self.world_size)]
        self.dist.all_gather(sizes, n)
        longest = int(max(sizes))
        padded = torch.cat([t.reshape(-1), t.new_zeros(longest - t.numel())])
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        self.dist.all_gather(parts, padded)
        return torch.cat([p[: int(k)] for p, k in zip(parts, sizes, strict=True)])

    def barrier(self) -> None:
        self.dist.barrier()

    def save_checkpoint(self, folder: Path) -> None:
        self.engine.save_checkpoint(str(folder), tag="deepspeed", save_latest=False)

    def load_checkpoint(self, folder: Path) -> None:
        path, _ = self.engine.load_checkpoint(
            str(folder), tag="deepspeed", load_optimizer_states=True, load_lr_scheduler_states=False
        )
        if path is None:
            raise RuntimeError(f"{folder}: DeepSpeed could not load the checkpoint")

    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        """fp32 master weights gathered one tensor at a time (a collective: every rank calls it);
        rank 0 returns the HF-keyed dict, other ranks None."""
        from deepspeed.utils import safe_get_full_fp32_param

        out: dict[str, torch.Tensor] = {}
        for name, p in self.hf_model.named_parameters():
            full = safe_get_full_fp32_param(p)
            if self.rank == 0:
                out[name] = full.detach().float().cpu().clone()
        return out if self.rank == 0 else None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.dist.barrier()
