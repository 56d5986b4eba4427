"""Byte-stable safetensors: the same weights and metadata give the same file in every process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save

from dsfed.io import canonical_safetensors, write_safetensors

METADATA = {"model": "unet", "round": "3", "val_dice": "0.81", "classes": "[1, 2]", "epoch": "7", "digest": "ab" * 8}

_WRITE = """
import sys, torch
from dsfed.io import write_safetensors
write_safetensors({"b.weight": torch.arange(6.0).reshape(2, 3), "a.bias": torch.ones(3, dtype=torch.float16)}, sys.argv[1], %r)
""" % METADATA


def test_same_bytes_in_every_process(tmp_path: Path) -> None:
    files = [tmp_path / f"w{i}.safetensors" for i in range(4)]
    for path in files:  # safetensors' Rust hash map orders metadata differently in each process
        subprocess.run([sys.executable, "-c", _WRITE, str(path)], check=True)
    blobs = {path.read_bytes() for path in files}
    assert len(blobs) == 1
    header = files[0].read_bytes()[8 : 8 + int.from_bytes(files[0].read_bytes()[:8], "little")]
    assert header.decode().rstrip(" ").startswith('{"__metadata__":{"classes":"[1, 2]","digest":')
    with safe_open(str(files[0]), framework="pt") as fh:
        assert fh.metadata() == METADATA
    loaded = load_file(str(files[0]))
    assert torch.equal(loaded["b.weight"], torch.arange(6.0).reshape(2, 3))
    assert loaded["a.bias"].dtype == torch.float16


def test_canonical_form_is_a_fixed_point_and_keeps_tensors() -> None:
    blob = save({"x": torch.randn(5, 7), "y": torch.zeros(1, dtype=torch.int64)}, metadata=METADATA)
    once = canonical_safetensors(blob)
    assert canonical_safetensors(once) == once
    assert int.from_bytes(once[:8], "little") % 8 == 0
    from safetensors.torch import load

    for name, tensor in load(blob).items():
        assert torch.equal(load(once)[name], tensor)


def test_without_metadata(tmp_path: Path) -> None:
    write_safetensors({"w": torch.ones(2)}, tmp_path / "w.safetensors")
    assert torch.equal(load_file(str(tmp_path / "w.safetensors"))["w"], torch.ones(2))
