"""Split one dataset into several clients: by Dirichlet-distributed shares or by attribute quantiles."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from dsfed.data.settings import Partition

__all__ = ["ATTRIBUTES", "attribute_parts", "dirichlet_parts", "partition_indices"]


def _brightness(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Mean grey level per sample, (N,). ``images``: (N, 3, S, S) uint8."""
    return images.reshape(len(images), -1).mean(axis=1)


def _foreground(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Fraction of pixels in the first class per sample, (N,). ``masks``: (N, K, Sm, Sm)."""
    return masks[:, 0].reshape(len(masks), -1).mean(axis=1)


ATTRIBUTES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "brightness": _brightness,
    "foreground": _foreground,
}


def attribute_parts(values: np.ndarray, parts: int) -> list[np.ndarray]:
    """Equal-count quantile split: part i holds the i-th slice of samples sorted by ``values``.

    Ties are broken by index, so the split is deterministic. Returns ``parts`` sorted index arrays.
    """
    order = np.argsort(values, kind="stable")
    return [np.sort(chunk) for chunk in np.array_split(order, parts)]


def dirichlet_parts(
    values: np.ndarray, parts: int, alpha: float, bins: int, seed: int, min_size: int = 1, tries: int = 1000
) -> list[np.ndarray]:
    """Non-IID split: bin samples by quantiles of ``values``, share each bin out with Dirichlet(alpha).

    Small ``alpha`` gives each client a skewed mix of bins (label-skew's analogue for segmentation);
    large ``alpha`` approaches an IID split. Draws again (up to ``tries``) until every part has at least
    ``min_size`` samples.
    """
    n = len(values)
    if n < parts * min_size:
        raise ValueError(f"{n} samples cannot give {parts} parts of at least {min_size}")
    rng = np.random.default_rng(seed)
    group_of = np.zeros(n, dtype=np.int64)
    if bins > 1:
        edges = np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1])
        group_of = np.searchsorted(edges, values, side="right")
    for _ in range(tries):
        assigned: list[list[int]] = [[] for _ in range(parts)]
        for group in np.unique(group_of):
            members = rng.permutation(np.flatnonzero(group_of == group))
            shares = rng.dirichlet(np.full(parts, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(members)).round().astype(int)
            for part, chunk in enumerate(np.split(members, cuts)):
                assigned[part].extend(chunk.tolist())
        if min(len(a) for a in assigned) >= min_size:
            return [np.sort(np.array(a, dtype=np.int64)) for a in assigned]
    raise ValueError(f"no Dirichlet(alpha={alpha}) draw in {tries} gave every part {min_size}+ samples; raise alpha")


def partition_indices(spec: Partition, images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Indices of the samples that belong to part ``spec.index``.

    Args:
        spec: the client's partition settings.
        images: (N, 3, S, S) uint8, the whole dataset.
        masks: (N, K, Sm, Sm) uint8/bool, the whole dataset.
    """
    values = ATTRIBUTES[spec.attribute](images, masks)
    if spec.method == "attribute":
        parts = attribute_parts(values, spec.parts)
    else:
        parts = dirichlet_parts(values, spec.parts, spec.alpha, spec.bins or spec.parts, spec.seed)
    return parts[spec.index]
