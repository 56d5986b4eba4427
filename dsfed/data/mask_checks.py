"""What a client's masks say about themselves: the share of pixels per class, and the check that refuses
implausible ones (an inverted layout imports as ~99 % foreground)."""

from __future__ import annotations

import numpy as np

from dsfed.errors import SourceError

__all__ = ["check_foreground", "foreground_shares"]


def foreground_shares(masks: np.ndarray) -> np.ndarray:
    """Share of pixels in each class over all samples, (K,) float64. ``masks``: (N, K, Sm, Sm) {0, 1}."""
    return masks.reshape(masks.shape[0], masks.shape[1], -1).mean(axis=(0, 2), dtype=np.float64)


def check_foreground(masks: np.ndarray, classes: list[str], limit: float, client: str) -> None:
    """Refuse masks (N, K, Sm, Sm) in which a class covers more than ``limit`` (``prepare.max_foreground``) of the pixels."""
    if not masks.size:
        return
    for name, share in zip(classes, foreground_shares(masks), strict=True):
        if share > limit:
            raise SourceError(f"clients.{client}: the masks are {100 * share:.1f} % {name} (over prepare.max_foreground {limit:g}): "
                              "an inverted mask (a mask_mapping or threshold the wrong way round)? raise prepare.max_foreground to accept them")
