"""Presets, overrides and the resolved config: loading, hashing and the derived values."""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .fields import MAX_CONFIG_BYTES, bounded_yaml, check_raw_booleans, check_strings
from .schema import IDENTITY_NEUTRAL, STAGE_SECTIONS, ReproConfig
from .validate import ConfigError, validate

PRESET_DIR = Path(__file__).parents[1] / "presets"


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping; a malformed file is one ConfigError naming the file and line."""
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(str(path), f"larger than {MAX_CONFIG_BYTES >> 20} MiB; not a config")
    try:
        body = bounded_yaml(path.read_text(encoding="utf-8"), str(path))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(where, f"malformed YAML ({problem})") from None
    except UnicodeDecodeError:
        raise ConfigError(str(path), "not a UTF-8 text file") from None
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise ConfigError(str(path), f"top level must be a mapping, not {type(body).__name__}")
    check_raw_booleans(body, f" in {path}")
    return body


def _preset_chain(name: str, seen: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError("preset", f"unknown preset '{name}' (known: {', '.join(list_presets())})")
    if name in seen:
        raise ConfigError("_base_", f"preset inheritance loop through '{name}'")
    body = read_yaml(path)
    base = body.pop("_base_", None)
    chain = _preset_chain(base, seen + (name,)) if base else []
    return chain + [body]


def _schema_error(exc: OmegaConfBaseException) -> ConfigError:
    key = getattr(exc, "full_key", None) or "?"
    msg = str(exc).splitlines()[0]
    if "Key '" in msg and "not in" in msg or "ConfigKeyError" in type(exc).__name__:
        msg = "unknown key"
    return ConfigError(key, msg)


def load_config(source: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> ReproConfig:
    """Preset name or resolved YAML file, plus ``key=value`` overrides, validated."""
    path = Path(source)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        layers = [read_yaml(path)]
    else:
        layers = _preset_chain(str(source))
        layers[-1].setdefault("preset", str(source))
    try:
        merged = OmegaConf.structured(ReproConfig)
        for layer in layers:
            merged = OmegaConf.merge(merged, OmegaConf.create(layer))
        for item in overrides:
            if "=" not in item:
                raise ConfigError(item, "override must look like key.path=value")
            key, value = item.split("=", 1)
            try:
                parsed = bounded_yaml(value, key)  # what OmegaConf parses the value with
            except yaml.YAMLError:
                raise ConfigError(key, f"malformed YAML value {value!r}") from None
            check_raw_booleans(_nest(key, parsed))
        try:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(list(overrides)))
        except TypeError:  # OmegaConf's bare error for a list or scalar where a mapping goes
            key = next(i.split("=", 1)[0] for i in overrides if _merge_fails(merged, i))
            raise ConfigError(key, "wrong type: expected a mapping") from None
        cfg: ReproConfig = OmegaConf.to_object(merged)  # type: ignore[assignment]
    except OmegaConfBaseException as exc:
        raise _schema_error(exc) from None
    check_strings(cfg)
    validate(cfg)
    return cfg


def _merge_fails(merged: Any, override: str) -> bool:
    try:
        OmegaConf.merge(merged, OmegaConf.from_dotlist([override]))
    except (TypeError, OmegaConfBaseException):
        return True
    return False


def _nest(key: str, value: Any) -> dict[str, Any]:
    """``a.b.c`` and a value as ``{"a": {"b": {"c": value}}}``."""
    out: Any = value
    for part in reversed(key.split(".")):
        out = {part: out}
    return out


def to_dict(cfg: Any) -> dict[str, Any]:
    """A loaded config (or one of its sections) as plain data. ``load_config`` leaves only plain,
    resolved values in the dataclasses, so ``asdict`` gives what OmegaConf's round trip gives
    (tests/unit/test_config.py) at a hundredth of the cost: the Snakefile hashes every stage's
    sections at each invocation."""
    return asdict(cfg)


def to_yaml(cfg: ReproConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def config_hash(cfg: ReproConfig, sections: tuple[str, ...] | None = None) -> str:
    """sha256 (first 16 hex) of the canonical YAML of the whole config or of some sections."""
    data = to_dict(cfg)
    if sections is not None:
        data = {k: data[k] for k in sections}
    return hashlib.sha256(yaml.safe_dump(data, sort_keys=True).encode()).hexdigest()[:16]


def stage_sections(cfg: ReproConfig, stage: str) -> tuple[str, ...]:
    """The config sections ``stage`` reads. The tiny stand-in of eval_reference is trained with
    the ``rm`` recipe; a published reference is not, so an rm change never re-evaluates it."""
    sections = STAGE_SECTIONS[stage]
    if stage == "eval_reference" and cfg.reference.source == "tiny":
        sections = (*sections, "rm")
    return sections


def identity_config(cfg: ReproConfig, stage: str) -> dict[str, Any]:
    """The part of the config that decides the results of ``stage``: the sections it reads
    without the keys that change none of its results (``IDENTITY_NEUTRAL``)."""
    data = to_dict(cfg)
    data = {k: data[k] for k in stage_sections(cfg, stage)}
    for dotted in (*IDENTITY_NEUTRAL["*"], *IDENTITY_NEUTRAL.get(stage, ())):
        section, key = dotted.split(".", 1)
        if section in data:
            data[section] = {k: v for k, v in data[section].items() if k != key}
    return data


def stage_hash(cfg: ReproConfig, stage: str) -> str:
    """sha256 (first 16 hex) of ``identity_config``: the stage's identity and Snakemake trigger."""
    data = identity_config(cfg, stage)
    return hashlib.sha256(yaml.safe_dump(data, sort_keys=True).encode()).hexdigest()[:16]


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted-key view of a config (for MLflow params)."""
    if is_dataclass(obj):
        obj = {f.name: getattr(obj, f.name) for f in fields(obj)}
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if is_dataclass(value) or isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


@dataclass(frozen=True)
class Derived:
    world_size: int
    accumulation_steps: int
    est_updates: int
    est_warmup_updates: int


def derived(cfg: ReproConfig, kept_pairs: int | None = None) -> Derived:
    """Values computed from the config (never written back). EasyLM: updates = epochs x
    floor(N / total_batch), warmup = ceil(warmup_ratio x updates) (docs/fidelity.md §3)."""
    world = cfg.resources.train_rm.world_size
    n = cfg.data.expected_pairs if kept_pairs is None else kept_pairs
    updates = cfg.rm.epochs * (n // cfg.rm.total_batch_pairs)
    return Derived(
        world_size=world,
        accumulation_steps=cfg.rm.total_batch_pairs // (cfg.rm.micro_batch_pairs * world),
        est_updates=updates,
        est_warmup_updates=math.ceil(cfg.rm.warmup_ratio * updates),
    )
