"""The per-sample Zarr layout: one sample per chunk, chunks packed into shard files, old layout still read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from dsfed.data import sample_arrays
from dsfed.data.sample_arrays import SAMPLES_PER_SHARD, read_sample_array, write_sample_array


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def test_samples_are_packed_into_shard_files_and_read_back_one_by_one(tmp_path: Path) -> None:
    n = SAMPLES_PER_SHARD + 44
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, size=(n, 3, 8, 8), dtype=np.uint8)
    array[7] = 0  # an all-zero sample: not written as a chunk, read back as the fill value
    write_sample_array(zarr.open_group(tmp_path / "s.zarr", mode="w"), "images", array)

    stored = zarr.open_group(tmp_path / "s.zarr", mode="r")["images"]
    assert stored.chunks == (1, 3, 8, 8) and stored.shards == (SAMPLES_PER_SHARD, 3, 8, 8)
    # one metadata file and two shard files, where one file per sample would be n
    assert len(_files(tmp_path / "s.zarr" / "images")) == 3
    assert np.array_equal(stored[:], array)
    rows = [0, 7, SAMPLES_PER_SHARD - 1, SAMPLES_PER_SHARD, n - 1]
    assert np.array_equal(stored.get_orthogonal_selection((rows,)), array[rows])
    assert all(np.array_equal(stored[i], array[i]) for i in rows)


def test_the_same_samples_give_the_same_bytes(tmp_path: Path) -> None:
    """Outputs are byte-stable (two runs of a stage give equal DVC hashes): so is the shard layout."""
    array = np.random.default_rng(2).integers(0, 2, size=(300, 2, 16, 16), dtype=np.uint8)
    for name in ("one", "two"):
        write_sample_array(zarr.open_group(tmp_path / name, mode="w"), "masks", array)
    one, two = _files(tmp_path / "one"), _files(tmp_path / "two")
    assert [p.relative_to(tmp_path / "one") for p in one] == [p.relative_to(tmp_path / "two") for p in two]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(one, two, strict=True))


def test_an_empty_array_is_written_and_read(tmp_path: Path) -> None:
    write_sample_array(zarr.open_group(tmp_path / "e.zarr", mode="w"), "masks", np.zeros((0, 2, 4, 4), np.uint8))
    stored = zarr.open_group(tmp_path / "e.zarr", mode="r")["masks"]
    assert stored.shape == (0, 2, 4, 4) and stored[:].shape == (0, 2, 4, 4)


def test_a_store_of_one_file_per_sample_reads_the_same(tmp_path: Path) -> None:
    """Stores written before sharding (chunks (1, ...), no shards) keep working."""
    array = np.random.default_rng(1).integers(0, 256, size=(20, 2, 4, 4), dtype=np.uint8)
    old = zarr.open_group(tmp_path / "old.zarr", mode="w").create_array(
        "masks", shape=array.shape, chunks=(1, 2, 4, 4), dtype=np.uint8)
    old[:] = array
    write_sample_array(zarr.open_group(tmp_path / "new.zarr", mode="w"), "masks", array)
    old_read, new_read = (zarr.open_group(tmp_path / f"{v}.zarr", mode="r")["masks"] for v in ("old", "new"))
    assert len(_files(tmp_path / "old.zarr" / "masks")) == 21 and len(_files(tmp_path / "new.zarr" / "masks")) == 2
    assert np.array_equal(old_read[:], new_read[:]) and np.array_equal(old_read[[3, 11]], new_read[[3, 11]])


def test_a_small_array_is_served_from_memory_and_a_large_one_from_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading is the same either way: the rows, a fancy selection, shape and dtype."""
    array = np.random.default_rng(3).integers(0, 256, size=(30, 3, 8, 8), dtype=np.uint8)
    stored = write_sample_array(zarr.open_group(tmp_path / "m.zarr", mode="w"), "images", array)
    small = read_sample_array(stored)
    monkeypatch.setattr(sample_arrays, "IN_MEMORY_BYTES", array.nbytes - 1)
    large = read_sample_array(stored)
    assert isinstance(small, np.ndarray) and isinstance(large, zarr.Array)
    with pytest.raises(ValueError, match="read-only"):
        small[0] += 1   # a row is a view of what every later read gets
    for served in (small, large):
        assert served.shape == array.shape and served.dtype == array.dtype
        assert all(np.array_equal(served[i], array[i]) for i in (0, 13, 29))
        assert np.array_equal(served[[4, 2]], array[[4, 2]])
