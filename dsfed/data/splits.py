"""Train/val/test index assignment for one client, honouring splits a dataset's layout already gives."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from dsfed.data.sources.base import GivenSplit

SPLITS = ("train", "val", "test")


def stable_seed(*parts: int | str) -> int:
    """A seed that depends only on ``parts`` (unlike ``hash()``, stable across processes)."""
    return zlib.crc32("/".join(map(str, parts)).encode()) & 0x7FFFFFFF


def assign_splits(
    given: Sequence[GivenSplit], val: float, test: float, seed: int, holdout: bool = False
) -> dict[str, np.ndarray]:
    """Split sample indices ``0..N-1`` into train / val / test.

    Args:
        given: per-sample split from the source layout ('train', 'test' or None), length N.
        val: fraction for validation; of all samples, or of the layout's training part when the
            layout gives a test split.
        test: fraction for test when the layout gives none.
        seed: seeds the shuffle.
        holdout: a leave-one-domain-out client: every sample goes to test.

    Returns:
        ``{"train": (n_train,), "val": (n_val,), "test": (n_test,)}`` sorted int64 arrays that partition
        ``0..N-1``.
    """
    n = len(given)
    everything = np.arange(n, dtype=np.int64)
    if holdout:
        empty = np.empty(0, dtype=np.int64)
        return {"train": empty, "val": empty, "test": everything}
    rng = np.random.default_rng(seed)
    if any(g == "test" for g in given):
        test_idx = np.array([i for i, g in enumerate(given) if g == "test"], dtype=np.int64)
        pool = np.array([i for i, g in enumerate(given) if g != "test"], dtype=np.int64)
        pool = rng.permutation(pool)
        n_val = int(round(val * len(pool)))
        n_val = min(n_val, max(len(pool) - 1, 0))
        val_idx, train_idx = pool[:n_val], pool[n_val:]
    else:
        order = rng.permutation(everything)
        n_test = int(round(test * n))
        n_val = int(round(val * n))
        while n_test + n_val >= n and (n_test or n_val):  # always keep a training sample
            if n_val >= n_test and n_val:
                n_val -= 1
            else:
                n_test -= 1
        test_idx, val_idx, train_idx = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    return {"train": np.sort(train_idx), "val": np.sort(val_idx), "test": np.sort(test_idx)}
