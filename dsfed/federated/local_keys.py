"""FedBN-style local keys: state-dict entries (e.g. normalisation layers) that stay on their client."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TypeVar

__all__ = ["LocalKeys"]

T = TypeVar("T")


class LocalKeys:
    """Regular expressions over state-dict keys; a key that any of them matches (``re.search``) is local.

    Local keys are never sent or averaged: the rounds loop only ever transmits the shared part, and
    each client keeps its own values for the local part. With no patterns everything is shared.

    Example: ``LocalKeys([r"(^|\\.)bn\\d*\\.", r"\\.norm\\d*\\."])`` keeps BatchNorm / norm layers local (FedBN).
    """

    def __init__(self, patterns: Iterable[str] = ()) -> None:
        self.patterns = list(patterns)
        self._regexes = [re.compile(p) for p in self.patterns]

    def __repr__(self) -> str:
        return f"LocalKeys({self.patterns!r})"

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def is_local(self, key: str) -> bool:
        """Whether ``key`` stays on the client."""
        return any(r.search(key) for r in self._regexes)

    def split(self, weights: Mapping[str, T]) -> tuple[dict[str, T], dict[str, T]]:
        """Split ``weights`` into ``(shared, local)``, both in the original key order."""
        shared: dict[str, T] = {}
        local: dict[str, T] = {}
        for key, value in weights.items():
            (local if self.is_local(key) else shared)[key] = value
        return shared, local

    def shared(self, weights: Mapping[str, T]) -> dict[str, T]:
        """Only the shared (travelling) part of ``weights``."""
        return self.split(weights)[0]

    def merge(self, shared: Mapping[str, T], local: Mapping[str, T]) -> dict[str, T]:
        """Full weights from a shared and a local part; raises ``ValueError`` if a key is on the wrong side."""
        wrong_shared = sorted(k for k in shared if self.is_local(k))
        wrong_local = sorted(k for k in local if not self.is_local(k))
        if wrong_shared or wrong_local:
            raise ValueError(f"local keys in the shared part {wrong_shared[:5]}, shared keys in the local part {wrong_local[:5]}")
        return {**shared, **local}
