"""Atomic, deterministic output helpers."""

from __future__ import annotations

import json
import struct

import torch
from safetensors import safe_open

from ksmith.io import safetensors_bytes, save_safetensors


def test_safetensors_bytes_do_not_depend_on_metadata_order(tmp_path):
    tensors = {"b.weight": torch.arange(6.0).view(2, 3), "a.bias": torch.ones(3)}
    one = safetensors_bytes(tensors, {"format": "ksmith-delta", "dtype": "float32", "x": "1"})
    two = safetensors_bytes(tensors, {"x": "1", "dtype": "float32", "format": "ksmith-delta"})
    assert one == two
    (n,) = struct.unpack("<Q", one[:8])
    assert n % 8 == 0
    header = one[8 : 8 + n].decode()
    assert list(json.loads(header)["__metadata__"]) == ["dtype", "format", "x"]


def test_saved_file_reads_back(tmp_path):
    tensors = {
        "w": torch.randn(4, 5, generator=torch.Generator().manual_seed(0)),
        "v": torch.ones(2),
    }
    path = tmp_path / "sub" / "t.safetensors"
    save_safetensors(tensors, path, metadata={"format": "ksmith-delta"})
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == {"format": "ksmith-delta"}
        for name, t in tensors.items():
            assert torch.equal(f.get_tensor(name), t)
    assert [p.name for p in path.parent.iterdir()] == ["t.safetensors"]  # no temp file left
