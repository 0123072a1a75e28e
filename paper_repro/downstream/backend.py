"""Which lm-eval model a config builds for a policy: lm-eval's HF backend (transformers; CPU and
the tiny preset) or its vLLM backend (GPU; the optional ``vllm`` extra), with the same sampling
parameters either way. The spec (model type + arguments) is what identity and MLflow record."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..config import ReproConfig


@dataclass(frozen=True)
class LMSpec:
    model_type: str  # lm-eval's registered model name: "hf" or "vllm"
    args: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def lm_spec(cfg: ReproConfig, model_dir: Path, device: str | None = None) -> LMSpec:
    """The lm-eval model of the policy in ``model_dir``. Remote code is never trusted."""
    ds = cfg.downstream
    common = {"pretrained": str(model_dir), "dtype": ds.dtype, "trust_remote_code": False}
    if ds.backend == "vllm":
        gpus = cfg.resources.eval_downstream.gpus_per_node or 1
        return LMSpec(
            "vllm",
            {
                **common,
                "tensor_parallel_size": gpus,
                "gpu_memory_utilization": ds.vllm_gpu_memory_utilization,
                "seed": ds.bon.seed,
                "batch_size": "auto",
            },
        )
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    return LMSpec("hf", {**common, "device": device, "batch_size": ds.batch_size})


def sampling_kwargs(cfg: ReproConfig, task_kwargs: dict[str, Any]) -> dict[str, Any]:
    """A task's generation kwargs turned into best-of-N sampling: its stop sequences kept,
    temperature / top_p / token cap from ``downstream.bon`` (both backends read these keys)."""
    b = cfg.downstream.bon
    out = {k: v for k, v in task_kwargs.items() if k in ("until",)}
    return {
        **out,
        "do_sample": True,
        "temperature": b.temperature,
        "top_p": b.top_p,
        "max_gen_toks": min(
            int(task_kwargs.get("max_gen_toks", b.max_new_tokens)), b.max_new_tokens
        ),
    }


def build_lm(spec: LMSpec):
    """The lm-eval LM instance (vLLM is imported only here, on a GPU machine)."""
    from lm_eval.api.registry import get_model

    return get_model(spec.model_type).create_from_arg_obj(dict(spec.args))
