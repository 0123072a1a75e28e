"""One configuration schema for every stage: dataclasses + OmegaConf.

A preset is a small YAML file in ``paper_repro/presets/`` (optionally ``_base_: other-preset``);
``load_config(preset_or_file, overrides)`` merges schema <- preset chain <- ``key=value``
overrides, validates, and returns plain dataclasses. Derived values (accumulation steps, warmup
updates) are computed by ``derived()`` and shown, never written back into the config.
"""

from __future__ import annotations

from .load import (
    PRESET_DIR,
    Derived,
    config_hash,
    derived,
    flatten,
    list_presets,
    load_config,
    stage_hash,
    to_dict,
    to_yaml,
)
from .schema import (
    KNOWN_SPLITS,
    STAGE_SECTIONS,
    STAGES,
    DataConfig,
    DatasetRef,
    EvalConfig,
    ExportConfig,
    ModelConfig,
    PPOConfig,
    ReferenceConfig,
    ReproConfig,
    ResourcesConfig,
    RMTrainConfig,
    StageResources,
    TinyArch,
    TrackingConfig,
)
from .validate import ConfigError, validate

__all__ = [
    "ConfigError",
    "DataConfig",
    "DatasetRef",
    "Derived",
    "EvalConfig",
    "ExportConfig",
    "KNOWN_SPLITS",
    "ModelConfig",
    "PPOConfig",
    "PRESET_DIR",
    "RMTrainConfig",
    "ReferenceConfig",
    "ReproConfig",
    "ResourcesConfig",
    "STAGES",
    "STAGE_SECTIONS",
    "StageResources",
    "TinyArch",
    "TrackingConfig",
    "config_hash",
    "derived",
    "flatten",
    "list_presets",
    "load_config",
    "stage_hash",
    "to_dict",
    "to_yaml",
    "validate",
]
