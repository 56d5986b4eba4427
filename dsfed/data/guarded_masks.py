"""Masks a client's training may not read: the store's ``masks`` view when ``labels`` is not ``full``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import zarr

from dsfed.errors import UnlabelledError

__all__ = ["GuardedMasks"]


class GuardedMasks:
    """Read-only masks of a client whose labels are not for training (``labels``: test_only or none).

    Indexes like the store's ``masks`` array (first axis: store rows) and has its ``shape``, ``dtype``
    and length; reading a row training may not see raises :class:`UnlabelledError`, before any read.
    Rows: an int, a slice, an int array/list, or a bool array over all rows; a tuple indexes the other
    axes with its rest (``masks[rows, 0]``).
    """

    def __init__(self, array: zarr.Array | None, client: str, labels: str, shape: tuple[int, ...],
                 splits: dict[str, np.ndarray]) -> None:
        self._array = array  # None: the store has no masks (labels: none)
        self._client, self._labels = client, labels
        self.shape = shape
        self.dtype = np.dtype(np.uint8) if array is None else np.dtype(array.dtype)
        self._split_of = np.full(shape[0], "", dtype=object)
        for name, rows in splits.items():
            self._split_of[rows] = name

    def __len__(self) -> int:
        return int(self.shape[0])

    def __repr__(self) -> str:
        return f"<GuardedMasks of client {self._client} (labels: {self._labels}) shape={self.shape}>"

    def _rows(self, key: Any) -> np.ndarray:
        n = len(self)
        if isinstance(key, (int, np.integer)):
            row = int(key)
            if not -n <= row < n:
                raise IndexError(f"row {row} out of range for client {self._client}'s {n} masks")
            return np.array([row % n], dtype=np.int64)
        if isinstance(key, slice):
            return np.arange(n, dtype=np.int64)[key]
        rows = np.asarray(key)
        if rows.dtype == np.bool_:
            if rows.shape != (n,):
                raise IndexError(f"a bool row selection needs shape ({n},), got {rows.shape}")
            return np.flatnonzero(rows)
        if rows.size == 0:
            return np.zeros(0, dtype=np.int64)
        if not np.issubdtype(rows.dtype, np.integer):
            raise IndexError(f"masks rows must be ints, a slice or a bool array, got {rows.dtype}")
        rows = rows.reshape(-1).astype(np.int64)
        if ((rows < -n) | (rows >= n)).any():
            raise IndexError(f"rows out of range for client {self._client}'s {n} masks")
        return rows % n

    def _check(self, rows: np.ndarray) -> None:
        if self._labels == "none" or self._array is None:
            if len(rows):
                raise UnlabelledError(f"client {self._client} has labels: none: it has no masks (row {int(rows[0])} was asked for)")
            return
        bad = rows[self._split_of[rows] != "test"]
        if len(bad):
            row = int(bad[0])
            raise UnlabelledError(f"client {self._client} has labels: {self._labels}: its masks are for testing only, "
                                  f"not for training (row {row} is in its {self._split_of[row] or 'no'} split)")

    def __getitem__(self, key: Any) -> Any:
        rest: tuple[Any, ...] = ()
        if isinstance(key, tuple):
            key, rest = (key[0], key[1:]) if key else (slice(None), ())
        rows = self._rows(key)
        self._check(rows)
        if self._array is None:  # labels: none, no rows asked for
            return np.zeros((0, *self.shape[1:]), dtype=self.dtype)[(slice(None), *rest)]
        if isinstance(key, (int, np.integer, slice)):
            return self._array[(key, *rest)]
        return self._array.get_orthogonal_selection((rows, *rest))

    def get_orthogonal_selection(self, selection: Any) -> Any:
        """As ``zarr.Array.get_orthogonal_selection`` (rows first), with the same check."""
        return self[selection]

    def __iter__(self) -> Iterator[Any]:
        for row in range(len(self)):
            yield self[row]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = np.asarray(self[:])
        return out if dtype is None else out.astype(dtype)
