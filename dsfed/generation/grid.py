"""Picture grids for people to look at: rows of (3, S, S) tiles, mask outlines drawn on images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from dsfed.io import atomic_path

__all__ = ["outline", "save_grid"]


def outline(image: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """(3, S, S) uint8 with the boundary of each mask channel drawn (disc green, cup blue)."""
    out = image.copy()
    colours = ((0, 255, 0), (0, 128, 255), (255, 0, 255))
    for k, channel in enumerate(masks[:3] > 0):
        inner = channel.copy()
        inner[1:-1, 1:-1] &= channel[:-2, 1:-1] & channel[2:, 1:-1] & channel[1:-1, :-2] & channel[1:-1, 2:]
        edge = channel & ~inner
        for c in range(3):
            out[c][edge] = colours[k][c]
    return out


def save_grid(path: str | Path, rows: list[np.ndarray], scale: int = 2) -> Path:
    """A PNG of ``rows`` (each (M, 3, S, S) uint8) tiled row by row, 2 px gaps, upscaled by ``scale``."""
    m, s = rows[0].shape[0], rows[0].shape[-1]
    gap = 2
    canvas = np.full(((s + gap) * len(rows) - gap, (s + gap) * m - gap, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            canvas[r * (s + gap) : r * (s + gap) + s, c * (s + gap) : c * (s + gap) + s] = tile.transpose(1, 2, 0)
    picture = Image.fromarray(canvas).resize((canvas.shape[1] * scale, canvas.shape[0] * scale), Image.Resampling.NEAREST)
    with atomic_path(path, overwrite=True) as tmp:
        picture.save(tmp, format="PNG")
    return Path(path)
