"""Picture grids for people to look at: rows of (3, S, S) tiles, mask outlines drawn on images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from dsfed.io import atomic_path

__all__ = ["OUTLINE_COLOURS", "outline", "outline_legend", "save_grid"]


OUTLINE_COLOURS = (("green", (0, 255, 0)), ("blue", (0, 128, 255)), ("magenta", (255, 0, 255)))
"""The outline colour of mask channels 0, 1, 2 (a caption names them with :func:`outline_legend`)."""


def outline_legend(classes: list[str]) -> str:
    """``"optic_disc outlined green, optic_cup blue."``: the caption for :func:`outline` with these classes."""
    named = [f"{name} {OUTLINE_COLOURS[k][0]}" for k, name in enumerate(classes[: len(OUTLINE_COLOURS)])]
    return (named[0].replace(" ", " outlined ", 1) + "".join(f", {n}" for n in named[1:]) + ".") if named else ""


def outline(image: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """(3, S, S) uint8 with the boundary of each of the first three mask channels drawn in :data:`OUTLINE_COLOURS`."""
    out = image.copy()
    colours = [rgb for _, rgb in OUTLINE_COLOURS]
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
