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

__all__ = ["SAMPLES_PER_SHARD", "write_sample_array"]

SAMPLES_PER_SHARD = 256
"""Samples per shard file: 1 GiB at the paper's 1024 px RGB; the whole store at the demo's sizes."""


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
