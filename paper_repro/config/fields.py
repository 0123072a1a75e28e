"""Checks of config values that OmegaConf's typing lets through: bounded YAML parsing, booleans
given as numbers, names and paths that could leave ``results/`` or reach the hub as something
else, and secrets that would be recorded. Each failure is a ``ConfigError`` naming the key."""

from __future__ import annotations

import functools
import re
import typing
from collections.abc import Iterator
from dataclasses import fields, is_dataclass
from typing import Any

import yaml

from ..provenance.paths import RUN_NAME
from .schema import ReproConfig
from .validate import ConfigError, check_revision

# A config is a few KB; a larger file is a mistake, not a config.
MAX_CONFIG_BYTES = 1 << 20
# YAML aliases share one node, so nine levels of nine aliases ("billion laughs") parse quickly
# into a graph that OmegaConf then expands into 9^9 nodes and never finishes. The expanded size
# is counted on the node graph before anything is built.
MAX_EXPANDED_NODES = 100_000

# Hugging Face repo ids: "owner/name", each part letters, digits, "-", "_", "." (never "..").
HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")
# A split name goes into file patterns (hub.split_patterns): no "/", "*", "?" or "[".
SPLIT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _expanded_size(root: yaml.Node) -> int:
    """Nodes of the document with every alias expanded (memoised on the shared node graph);
    ConfigError-free: a recursive alias counts as unbounded."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            children = _children(node)
            sizes[key] = min(1 + sum(sizes[id(c)] for c in children), MAX_EXPANDED_NODES + 1)
            continue
        if key in sizes:
            continue
        if key in on_path:  # an alias inside the node it names: infinitely deep
            return MAX_EXPANDED_NODES + 1
        on_path.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in sizes)
    return sizes[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def bounded_yaml(text: str, where: str) -> Any:
    """``yaml.safe_load`` of ``text`` that refuses what would hang or crash the loader: more than
    MAX_CONFIG_BYTES, an alias expansion beyond MAX_EXPANDED_NODES nodes, a recursive alias, an
    integer too long for Python to convert."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_CONFIG_BYTES:
        raise ConfigError(where, f"larger than {MAX_CONFIG_BYTES >> 20} MiB; not a config")
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        if _expanded_size(root) > MAX_EXPANDED_NODES:
            raise ConfigError(
                where,
                f"YAML aliases expand to more than {MAX_EXPANDED_NODES:,} nodes "
                "(an alias bomb, or an alias inside itself)",
            )
        return loader.construct_document(root)
    except ValueError as exc:  # int("9" * 5000): over CPython's 4,300-digit conversion limit
        if isinstance(exc, ConfigError):
            raise
        what = "an integer over 4,300 digits" if "digits" in str(exc) else str(exc)[:100]
        raise ConfigError(where, f"unreadable value ({what})") from None
    finally:
        loader.dispose()


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


@functools.cache
def field_type(key: str) -> Any | None:
    """The declared type of a dotted config key, None for an unknown one (OmegaConf reports it)."""
    cls: Any = ReproConfig
    for part in key.split("."):
        if not (is_dataclass(cls) and part in _hints(cls)):
            return None
        cls = _hints(cls)[part]
    return cls


def _leaves(body: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(body, dict):
        for k, v in body.items():
            yield from _leaves(v, f"{prefix}{k}.")
    else:
        yield prefix.rstrip("."), body


def check_raw_booleans(layer: dict[str, Any], where: str = "") -> None:
    """A bool key must be given true/false: OmegaConf turns 2, 0 or "yes" into a bool silently
    (``rm.packing: 2`` would switch packing on)."""
    for key, value in _leaves(layer):
        if field_type(key) is bool and not isinstance(value, bool):
            raise ConfigError(key, f"must be true or false, got {value!r}{where}")


def _strings(obj: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for f in fields(obj):
        key, value = f"{prefix}{f.name}", getattr(obj, f.name)
        if is_dataclass(value):
            yield from _strings(value, key + ".")
        elif isinstance(value, str):
            yield key, value


def _secret_env() -> dict[str, str]:
    from ..tracking.redact import environ_snapshot, is_secret_key

    return {v: k for k, v in environ_snapshot().items() if is_secret_key(k) and len(v) >= 6}


def check_strings(cfg: ReproConfig) -> None:
    """Names, ids and paths of the config: shapes that are safe to use as folder names, hub ids,
    file patterns and MLflow names; and no secret anywhere (a resolved config is written to the
    results folder and its values become MLflow params, tags and experiment names)."""
    secrets = _secret_env()
    for key, value in _strings(cfg):
        for secret, name in secrets.items():
            if secret in value:
                raise ConfigError(
                    key,
                    f"holds the value of the secret environment variable {name}; configs are "
                    "recorded in results/ and MLflow, credentials must stay in the environment",
                )
        if key == "tracking.uri" and re.search(r"[\s\x00-\x1f\x7f]", value):  # not echoed
            raise ConfigError(key, "a URI has no whitespace, line breaks or control characters")
        if key != "description" and CONTROL.search(value):
            raise ConfigError(key, f"contains a control character: {value!r}")
        last = key.rsplit(".", 1)[-1]
        if key == "preset":  # the default run folder is results/<preset>
            _match(key, value, RUN_NAME, "a preset name (one folder name under results/)")
        elif last == "hub_id" or key == "ppo.policy_hub_id":
            _match(key, value, HUB_ID, "a hub repo id 'owner/name'")
        elif last == "split":
            _match(key, value, SPLIT, "a split name (letters, digits, '_', '-', '.')")
        elif last == "local_path" and not value.strip():
            raise ConfigError(key, "is empty; leave it null when unused")
        elif key in ("tracking.experiment", "tracking.uri") and not value.strip():
            raise ConfigError(
                key, "is empty" + ("; use null for the default" if "uri" in key else "")
            )
        elif key in ("tracking.uri", "tracking.experiment") and len(value) > 1000:
            raise ConfigError(key, f"is {len(value)} characters long")
    for key in ("model.revision", "reference.revision", "ppo.policy_revision"):
        _revision_if_set(cfg, key)
    for name in ("preference", "rewardbench", "ppo_prompts"):
        _revision_if_set(cfg, f"data.{name}.revision")


def _match(key: str, value: str, pattern: re.Pattern, what: str) -> None:
    if not pattern.fullmatch(value) or ".." in value:
        raise ConfigError(key, f"must be {what}, got {value!r}")


def _revision_if_set(cfg: ReproConfig, key: str) -> None:
    value: Any = cfg
    for part in key.split("."):
        value = getattr(value, part)
    if value is not None:
        check_revision(key, value)
