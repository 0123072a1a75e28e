"""Weights hashed while read (paper_repro/provenance/verified.py): the tensors equal the safetensors library's,
and any changed byte (size and mtime kept, so the fast path cannot see it), a truncation or a weight
file the manifest does not list stops the load with one line naming the file."""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import load_file as st_load
from safetensors.torch import save_file

from paper_repro.errors import CorruptFileError, ReproError
from paper_repro.provenance.manifest import ChecksumError, UnlistedFileError, write_manifest
from paper_repro.provenance.verified import load_file, load_weights


@pytest.fixture
def model_dir(tmp_path):
    """``<x>/model/{a,b}.safetensors`` listed by ``<x>/manifest.json`` (as download_base lays out)."""
    folder = tmp_path / "download_base" / "model"
    folder.mkdir(parents=True)
    gen = torch.Generator().manual_seed(0)
    save_file(
        {
            "w": torch.randn(4, 8, generator=gen),
            "h": torch.randn(3, generator=gen).to(torch.bfloat16),
            "i": torch.arange(5, dtype=torch.int64),
            "empty": torch.zeros(0, 2),
        },
        str(folder / "a.safetensors"),
        metadata={"format": "pt"},
    )
    save_file({"z": torch.ones(2, 2)}, str(folder / "b.safetensors"))
    write_manifest(folder.parent / "manifest.json", folder)
    return folder


def same_size_flip(path, offset):
    """One byte changed in place, size and mtime kept (what `touch -d` after an edit does)."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_tensors_equal_the_safetensors_library(model_dir):
    state = load_weights(model_dir)
    want = {
        **st_load(str(model_dir / "a.safetensors")),
        **st_load(str(model_dir / "b.safetensors")),
    }
    assert state.keys() == want.keys()
    for name, t in want.items():
        assert state[name].dtype == t.dtype and torch.equal(state[name], t), name


@pytest.mark.parametrize(
    "where",
    [
        pytest.param(
            w,
            marks=pytest.mark.hardening(
                "2", f"weights: one byte changed ({w}), size and mtime kept: refused while loading"
            ),
        )
        for w in ("header", "tensor", "last byte")
    ],
)
def test_changed_byte_is_refused_naming_the_file(model_dir, where):
    path = model_dir / "a.safetensors"
    offset = {"header": 12, "tensor": path.stat().st_size - 40, "last byte": -1}[where]
    same_size_flip(path, offset)
    with pytest.raises(ChecksumError, match=r"a\.safetensors expected sha256:") as exc:
        load_weights(model_dir)
    assert len(str(exc.value).splitlines()) == 1


@pytest.mark.hardening("2", "weights: truncated safetensors file refused while loading")
def test_truncated_file_is_refused(model_dir):
    path = model_dir / "b.safetensors"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(ChecksumError, match="b.safetensors"):
        load_weights(model_dir)


@pytest.mark.hardening("2", "weights: a shard the manifest does not list is refused by name")
def test_an_unlisted_weight_file_is_refused_by_name(model_dir):
    extra = model_dir / "c.safetensors"
    save_file({"w": torch.full((4, 8), 7.0)}, str(extra))  # would override "w"
    with pytest.raises(UnlistedFileError, match=f"{extra}: not listed in"):
        load_weights(model_dir)
    extra.unlink()
    assert not torch.equal(load_weights(model_dir)["w"], torch.full((4, 8), 7.0))


def test_a_file_beside_a_manifest_that_does_not_list_it_is_refused(tmp_path):
    save_file({"x": torch.ones(1)}, str(tmp_path / "final.safetensors"))
    write_manifest(tmp_path / "manifest.json", tmp_path, [])
    with pytest.raises(ChecksumError, match="final.safetensors .*not listed"):
        load_file(tmp_path / "final.safetensors")


def test_a_file_no_manifest_lists_is_only_parsed_and_bad_headers_are_one_line(tmp_path):
    path = tmp_path / "loose.safetensors"
    save_file({"x": torch.ones(3)}, str(path))
    assert torch.equal(load_file(path)["x"], torch.ones(3))
    path.write_bytes((10**9).to_bytes(8, "little") + b"{}")
    with pytest.raises(CorruptFileError, match=f"{path}: safetensors header of") as exc:
        load_file(path)
    assert isinstance(exc.value, ReproError)
