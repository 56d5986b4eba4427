"""Split assignment: partitions of 0..N-1, layout test splits kept, held-out clients test-only."""

from __future__ import annotations

import numpy as np
import pytest

from dsfed.data.splits import assign_splits, stable_seed


def _check_partition(splits: dict[str, np.ndarray], n: int) -> None:
    joined = np.concatenate(list(splits.values()))
    assert sorted(joined.tolist()) == list(range(n))


@pytest.mark.parametrize(("n", "val", "test", "expected"), [(100, 0.15, 0.2, (65, 15, 20)), (10, 0.2, 0.2, (6, 2, 2)), (2, 0.5, 0.5, (1, 0, 1)), (1, 0.2, 0.2, (1, 0, 0))])
def test_fractions_without_layout_split(n: int, val: float, test: float, expected: tuple[int, int, int]) -> None:
    splits = assign_splits([None] * n, val, test, seed=3)
    _check_partition(splits, n)
    assert tuple(len(splits[s]) for s in ("train", "val", "test")) == expected


def test_layout_test_split_is_kept_and_val_comes_from_train() -> None:
    given = ["train"] * 20 + ["test"] * 5
    splits = assign_splits(given, val=0.25, test=0.9, seed=0)
    _check_partition(splits, 25)
    assert splits["test"].tolist() == list(range(20, 25))
    assert len(splits["val"]) == 5 and splits["val"].max() < 20


def test_holdout_is_all_test() -> None:
    splits = assign_splits([None] * 7, 0.2, 0.2, seed=0, holdout=True)
    assert splits["test"].tolist() == list(range(7)) and len(splits["train"]) == len(splits["val"]) == 0


def test_seeded_and_stable() -> None:
    a = assign_splits([None] * 50, 0.2, 0.2, seed=stable_seed(0, "site_a"))
    b = assign_splits([None] * 50, 0.2, 0.2, seed=stable_seed(0, "site_a"))
    c = assign_splits([None] * 50, 0.2, 0.2, seed=stable_seed(0, "site_b"))
    assert all(np.array_equal(a[s], b[s]) for s in a)
    assert not np.array_equal(a["test"], c["test"])
    assert stable_seed(0, "site_a") == 1834582375  # crc32: the same in every process and on every machine
