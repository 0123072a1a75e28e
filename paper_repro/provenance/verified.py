"""Weights loaded from verified bytes: every byte of a ``*.safetensors`` file that goes into a model
is hashed as it is read, and the tensors are handed over only when the whole file matches its
manifest. One pass over the file, never a second one (a 70B base is 140 GB), and the size + mtime
fast path of ``manifest.verify_manifest`` never decides which weights a result is made of.

Which manifest: a model folder ``<x>/model`` is listed by ``<x>/manifest.json`` (download_base,
export_rm, reference_model, ppo_policy_base) or by ``<x>/model.manifest.json`` (a model fetched by
``eval-rewardbench --model``); a file beside ``manifest.json`` in a stage folder
(``train_rm/final.safetensors``) by that manifest. Only the weight files the manifest lists are
loaded: an extra shard dropped into the folder is never picked up. A folder with no manifest (a
user's own ``--model`` folder, tests) loads as transformers loads it.

The safetensors layout (8-byte little-endian header length, JSON header, then the tensor bytes at
the header's ``data_offsets``) is the one documented by the safetensors project
(https://huggingface.co/docs/safetensors, "Format"); it is parsed here so that the hash and the
tensors come from the same read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ..errors import CorruptFileError
from .manifest import BadFile, ChecksumError, read_manifest, refuse_unlisted

WEIGHTS_SUFFIX = ".safetensors"
MAX_HEADER = 100 << 20  # the safetensors library's own bound on the JSON header
CHUNK = 64 << 20  # read size for the bytes between tensors (normally none)

DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}


def is_weights(name: str) -> bool:
    return name.endswith(WEIGHTS_SUFFIX)


def listing(path: Path) -> tuple[Path, Path, str] | None:
    """(manifest, folder its names are relative to, name of ``path`` in it) for a file or model
    folder that a pipeline manifest lists; None when no manifest lists it. ``ppo/policy`` is
    listed by ``ppo/manifest.json`` under ``policy/``."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    candidates = [(folder / "manifest.json", folder)]
    if folder.name == "model":
        candidates = [
            (folder.with_name("model.manifest.json"), folder),
            (folder.parent / "manifest.json", folder),
        ]
    elif folder.name == "policy":
        candidates = [(folder.parent / "manifest.json", folder.parent)]
    for manifest, root in candidates:
        if manifest.is_file():
            name = str(path.relative_to(root)) if path != root else ""
            return manifest, root, name
    return None


def expected_files(folder: Path) -> dict[str, str] | None:
    """{name relative to ``folder``: sha256} of the files the manifest of model folder ``folder``
    lists, or None when none lists it. A file in the folder that the manifest leaves out is
    refused by name (UnlistedFileError): the config and tokenizer loaders would read it."""
    found = listing(folder)
    if found is None:
        return None
    manifest_path, _, prefix = found
    files = read_manifest(manifest_path)["files"]
    prefix = f"{prefix}/" if prefix else ""
    if Path(folder).name in ("model", "policy"):  # not a stage folder with its own records
        refuse_unlisted(Path(folder), files, manifest_path, prefix)
    return {n[len(prefix) :]: h for n, h in files.items() if n.startswith(prefix)}


def load_file(path: Path, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """The tensors of one safetensors file, hashed while read. ``sha256``: the expected digest
    (default: the one the manifest beside the file lists; a file no manifest lists is only
    parsed). ChecksumError naming the file when the bytes differ; nothing is returned then."""
    path = Path(path)
    if sha256 is None and (found := listing(path)) is not None:
        sha256 = read_manifest(found[0])["files"].get(found[2])
        if sha256 is None:
            raise ChecksumError(
                found[1], [BadFile(found[2], "listed in " + str(found[0]), "not listed")]
            )
    h = hashlib.sha256()
    problem, tensors = None, {}
    with open(path, "rb") as f:
        try:
            tensors = _read_tensors(f, h, path)
        except CorruptFileError as exc:
            problem = exc
        while block := f.read(CHUNK):  # the rest (or everything after a bad header)
            h.update(block)
    if sha256 is not None and h.hexdigest() != sha256:
        raise ChecksumError(
            path.parent, [BadFile(path.name, f"sha256:{sha256}", f"sha256:{h.hexdigest()}")]
        )
    if problem is not None:
        raise problem
    return tensors


def _read_exact(f, n: int, h, path: Path) -> bytearray:
    buf = bytearray(n)
    got = f.readinto(memoryview(buf)) if n else 0
    h.update(memoryview(buf)[:got])
    if got != n:
        raise CorruptFileError(f"{path}: truncated safetensors file ({got} of {n} bytes)")
    return buf


def _read_tensors(f, h, path: Path) -> dict[str, torch.Tensor]:
    size = int.from_bytes(_read_exact(f, 8, h, path), "little")
    if size > MAX_HEADER:
        raise CorruptFileError(f"{path}: safetensors header of {size} bytes (not safetensors)")
    try:
        header: dict[str, Any] = json.loads(bytes(_read_exact(f, size, h, path)))
    except (ValueError, RecursionError):  # bad JSON or UTF-8, or an integer over 4,300 digits
        raise CorruptFileError(f"{path}: safetensors header is not JSON") from None
    header.pop("__metadata__", None)
    entries = []
    try:
        for name, info in header.items():
            dtype = DTYPES[info["dtype"]]
            shape = [int(d) for d in info["shape"]]
            begin, end = (int(o) for o in info["data_offsets"])
            entries.append((begin, end, name, dtype, shape))
    except (KeyError, TypeError, ValueError):
        raise CorruptFileError(f"{path}: safetensors header entry {name!r} is malformed") from None
    tensors, pos = {}, 0
    for begin, end, name, dtype, shape in sorted(entries):
        numel = 1
        for d in shape:
            numel *= d
        if begin != pos or end - begin != numel * dtype.itemsize:
            raise CorruptFileError(f"{path}: tensor {name!r} has invalid data_offsets")
        buf = _read_exact(f, end - begin, h, path)
        t = torch.frombuffer(buf, dtype=dtype) if numel else torch.empty(0, dtype=dtype)
        tensors[name] = t.reshape(shape)
        pos = end
    return tensors


def load_weights(folder: Path) -> dict[str, torch.Tensor] | None:
    """Every weight file the manifest beside model folder ``folder`` lists, merged into one state
    dict and verified while read; None when no manifest lists the folder."""
    files = expected_files(folder)
    if files is None:
        return None
    state: dict[str, torch.Tensor] = {}
    for name in sorted(n for n in files if is_weights(n)):
        state.update(load_file(Path(folder) / name, files[name]))
    if not state:
        raise ChecksumError(Path(folder), [BadFile("*.safetensors", "listed", "none listed")])
    return state


def read_bytes(path: Path) -> bytes:
    """The bytes of a file (not weights) that a stage parses, read once and checked against the
    manifest that lists it, so what is parsed is what was hashed: a byte changed after
    ``integrity.verify_inputs`` is refused here, not used. A file no manifest is beside (a user's
    own ``--model`` folder, tests) is returned as read; one a manifest leaves out is refused."""
    path = Path(path)
    data = path.read_bytes()
    check_read(path, hashlib.sha256(data).hexdigest())
    return data


def check_read(path: Path, got: str) -> None:
    """Refuse (ChecksumError) bytes of ``path`` read with sha256 ``got`` unless the manifest that
    lists the file has that digest; a file no manifest is beside passes, one it leaves out not."""
    if (found := listing(Path(path))) is None:
        return
    manifest, root, name = found
    want = read_manifest(manifest)["files"].get(name)
    if want is None:
        raise ChecksumError(root, [BadFile(name, f"listed in {manifest}", "not listed")])
    if got != want:
        raise ChecksumError(root, [BadFile(name, f"sha256:{want}", f"sha256:{got}")])


@contextlib.contextmanager
def checked_copy(folder: Path) -> Iterator[Path]:
    """A private temporary copy of model folder ``folder``'s listed files but the weights, each
    written from the bytes ``read_bytes`` checked: what ``AutoConfig`` / ``AutoTokenizer``
    ``from_pretrained`` parse is what was hashed (nobody else can change the copy). Yields
    ``folder`` itself when no manifest lists it."""
    files = expected_files(Path(folder))
    if files is None:
        yield Path(folder)
        return
    with tempfile.TemporaryDirectory(prefix="verified-") as tmp:
        for name in (n for n in files if not is_weights(n) and "/" not in n):
            (Path(tmp) / name).write_bytes(read_bytes(Path(folder) / name))
        yield Path(tmp)


CONFIG_OVERRIDES = ("num_labels", "pad_token_id")


def from_pretrained(cls, folder: str | Path, **kwargs: Any):
    """``cls.from_pretrained(folder, **kwargs)`` with the weights taken from ``load_weights`` (bytes
    hashed while read) when a manifest lists the folder. The config is read from the folder (its
    bytes parsed from a ``checked_copy``); ``num_labels`` / ``pad_token_id``
    kwargs override it as they do for a folder."""
    folder = Path(folder)
    state = load_weights(folder)
    if state is None:
        return cls.from_pretrained(str(folder), **kwargs)
    from transformers import AutoConfig

    overrides = {k: kwargs.pop(k) for k in CONFIG_OVERRIDES if k in kwargs}
    config = kwargs.pop("config", None)
    if config is None:
        with checked_copy(folder) as copy:
            config = AutoConfig.from_pretrained(str(copy), trust_remote_code=False, **overrides)
        config._name_or_path = str(folder)
    else:
        for key, value in overrides.items():
            setattr(config, key, value)
    kwargs.pop("use_safetensors", None)  # the state dict was read from safetensors here
    if hasattr(cls, "_model_mapping"):  # an Auto class needs a folder; take its concrete class
        try:
            cls = cls._model_mapping[type(config)]
        except KeyError:
            raise ValueError(f"{folder}: no {cls.__name__} for {type(config).__name__}") from None
    kwargs.setdefault("trust_remote_code", False)
    return cls.from_pretrained(None, config=config, state_dict=state, **kwargs)
