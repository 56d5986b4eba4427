"""The one Zarr layout of every per-sample array dsfed writes (client stores, synthetic stores, mask uploads).

One sample per chunk, so a DataLoader reads one sample without decoding its neighbours; the chunks packed
into shard files of up to :data:`SAMPLES_PER_SHARD` samples (Zarr v3 sharding), so a store of N samples is
a handful of files rather than N. DVC walks, stats and hashes every file of every directory it tracks, on
every ``dvc status`` and ``dvc repro``: with one file per sample the demo's stores were 14,000 of the
18,000 files its no-op ``dvc repro`` walked. Stores written before this layout (one file per sample) are
read the same way: Zarr finds the layout in each array's metadata.
"""

from __future__ import annotations

import numpy as np
import zarr
from zarr.codecs import BloscCodec

__all__ = ["IN_MEMORY_BYTES", "SAMPLES_PER_SHARD", "read_sample_array", "write_sample_array"]

SAMPLES_PER_SHARD = 256
"""Samples per shard file: 1 GiB at the paper's 1024 px RGB; the whole store at the demo's sizes."""


IN_MEMORY_BYTES = 32 * 2**20
"""Arrays up to this size (decoded) are read whole when opened and served from memory: a shard read in one
call costs what about 20 single-sample reads do (80 samples at 128 px: 28 ms whole, 1.3 ms a sample), and
training reads every sample each epoch. 650 RGB samples at 128 px; a 1024 px store stays on disk."""


def read_sample_array(array: zarr.Array) -> zarr.Array | np.ndarray:
    """``array`` itself, or its whole content as an (N, ...) numpy array when it decodes to at most
    :data:`IN_MEMORY_BYTES`. Either indexes the same way (``a[i]``, ``a[rows]``, ``a.shape``, ``a.dtype``).
    The in-memory one is read-only: a row is a view, so a reader that wrote into it would change what every
    later read gets (a zarr read is a fresh copy); it raises instead."""
    if array.nbytes > IN_MEMORY_BYTES:
        return array
    whole: np.ndarray = np.asarray(array[:])
    whole.flags.writeable = False
    return whole


def write_sample_array(group: zarr.Group, name: str, array: np.ndarray, codec: str = "zstd", level: int = 5) -> zarr.Array:
    """Write ``array`` (N, ...) as ``group[name]``: chunks (1, ...), shards (min(N, SAMPLES_PER_SHARD), ...),
    Blosc (``codec`` at ``level``, bit-shuffled) on each chunk. An empty array (N = 0) is written unsharded
    (no shard can have a zero extent); it holds no chunk either way.
    """
    n, sample = int(array.shape[0]), tuple(int(d) for d in array.shape[1:])
    stored = group.create_array(
        name,
        shape=array.shape,
        chunks=(1, *sample),
        shards=(min(n, SAMPLES_PER_SHARD), *sample) if n else None,
        dtype=array.dtype,
        compressors=BloscCodec(cname=codec, clevel=level, shuffle="bitshuffle"),
    )
    if n:
        stored[:] = array
    return stored
