"""Partitioning one dataset into clients: disjoint, complete, deterministic, skewed as configured."""

from __future__ import annotations

import numpy as np
import pytest

from dsfed.data.partition import attribute_parts, dirichlet_parts, partition_indices
from dsfed.data.settings import Partition


def _is_partition(parts: list[np.ndarray], n: int) -> bool:
    joined = np.concatenate(parts)
    return len(joined) == n and len(np.unique(joined)) == n


def test_attribute_parts_are_ordered_quantiles() -> None:
    values = np.random.default_rng(0).normal(size=103)
    parts = attribute_parts(values, 4)
    assert _is_partition(parts, 103)
    assert [len(p) for p in parts] == [26, 26, 26, 25]
    for lo, hi in zip(parts, parts[1:]):
        assert values[lo].max() <= values[hi].min()


@pytest.mark.parametrize(("alpha", "max_spread"), [(1000.0, 0.08), (0.1, None)])
def test_dirichlet_skew_follows_alpha(alpha: float, max_spread: float | None) -> None:
    values = np.random.default_rng(1).uniform(size=2000)
    parts = dirichlet_parts(values, parts=4, alpha=alpha, bins=4, seed=7)
    assert _is_partition(parts, 2000)
    # share of each client's samples in each value-quartile bin
    bins = np.searchsorted(np.quantile(values, [0.25, 0.5, 0.75]), values, side="right")
    shares = np.array([[np.mean(bins[p] == b) for b in range(4)] for p in parts])
    spread = shares.max(axis=1) - shares.min(axis=1)
    if max_spread is not None:  # nearly IID: every client sees every bin about equally
        assert spread.max() < max_spread
    else:  # strongly non-IID: clients are dominated by some bins
        assert spread.mean() > 0.5


def test_dirichlet_is_deterministic_and_respects_min_size() -> None:
    values = np.arange(40, dtype=float)
    a = dirichlet_parts(values, 4, alpha=0.3, bins=4, seed=2, min_size=3)
    b = dirichlet_parts(values, 4, alpha=0.3, bins=4, seed=2, min_size=3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b)) and min(len(p) for p in a) >= 3
    with pytest.raises(ValueError, match="cannot give 4 parts"):
        dirichlet_parts(values[:5], 4, alpha=1.0, bins=1, seed=0, min_size=2)


def test_partition_indices_by_brightness() -> None:
    levels = np.repeat(np.arange(12, dtype=np.uint8) * 20, 1)
    images = np.broadcast_to(levels[:, None, None, None], (12, 3, 4, 4)).copy()
    masks = np.zeros((12, 1, 2, 2), dtype=np.uint8)
    picked = [partition_indices(Partition(method="attribute", parts=3, index=i), images, masks).tolist() for i in range(3)]
    assert picked == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
