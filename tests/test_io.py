"""Byte-stable safetensors and .npz (the same content gives the same file in every process), atomic writes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save

from dsfed.io import atomic_path, canonical_safetensors, write_npz, write_safetensors

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


def _temporaries(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith(f".{path.name}.tmp-"))


def test_file_replaced_by_one_rename_and_kept_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    final = tmp_path / "out.json"
    final.write_text("old")
    inode = final.stat().st_ino
    with pytest.raises(RuntimeError), atomic_path(final, overwrite=True) as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer failed")
    assert final.read_text() == "old" and final.stat().st_ino == inode
    assert _temporaries(final) == []

    renames: list[tuple[str, str]] = []
    real_replace = os.replace

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        renames.append((os.fspath(src), os.fspath(dst)))
        assert Path(final).read_text() == "old"  # the old file stays in place until the one rename
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with open(final) as reader:
        with atomic_path(final, overwrite=True) as tmp:
            tmp.write_text("new")
        assert reader.read() == "old"  # a reader of the old file keeps its inode
    assert len(renames) == 1 and renames[0][1] == os.fspath(final)
    assert final.read_text() == "new" and final.stat().st_ino != inode
    assert _temporaries(final) == []


def test_directory_still_replaced(tmp_path: Path) -> None:
    final = tmp_path / "folder"
    final.mkdir()
    (final / "a.txt").write_text("old")
    with atomic_path(final, overwrite=True) as tmp:
        tmp.mkdir()
        (tmp / "b.txt").write_text("new")
    assert sorted(p.name for p in final.iterdir()) == ["b.txt"]
    assert _temporaries(final) == []


def test_stale_temporaries_of_dead_writers_removed(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    final = tmp_path / "out.json"
    dead_file = tmp_path / f".out.json.tmp-{child.pid}-0123abcd"
    dead_dir = tmp_path / f".out.json.tmp-{child.pid}-89abcdef"
    live = tmp_path / f".out.json.tmp-{os.getpid()}-deadbeef"
    other_name = tmp_path / f".other.json.tmp-{child.pid}-0123abcd"
    not_pattern = tmp_path / f".out.json.tmp-{child.pid}-0123abcdX"
    dead_file.write_text("stale")
    dead_dir.mkdir()
    (dead_dir / "inner").write_text("stale")
    for keep in (live, other_name, not_pattern):
        keep.write_text("keep")
    with atomic_path(final) as tmp:
        tmp.write_text("{}")
    assert not dead_file.exists() and not dead_dir.exists()
    assert live.read_text() == other_name.read_text() == not_pattern.read_text() == "keep"
    assert final.read_text() == "{}"


def test_npz_byte_stable_and_loads(tmp_path: Path) -> None:
    arrays = {"z": np.arange(12, dtype=np.float32).reshape(3, 4), "a": np.array([1, 2, 3], dtype=np.int64)}
    first, second = tmp_path / "first.npz", tmp_path / "second.npz"
    write_npz(first, arrays)
    time.sleep(2.1)  # zip timestamps have 2 s resolution: np.savez would differ by now
    write_npz(second, arrays)
    assert first.read_bytes() == second.read_bytes()
    with np.load(first) as loaded:
        assert list(loaded.files) == ["z", "a"]
        for key, array in arrays.items():
            assert loaded[key].dtype == array.dtype and np.array_equal(loaded[key], array)
    write_npz(first, arrays, compressed=False)
    assert first.read_bytes() != second.read_bytes()
    with np.load(first) as loaded:
        assert np.array_equal(loaded["z"], arrays["z"])


def test_file_write_is_fsynced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        calls.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with atomic_path(tmp_path / "out.txt") as tmp:
        tmp.write_text("data")
    assert len(calls) == 2  # the finished file, then its folder after the rename
