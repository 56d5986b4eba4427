"""Raster helpers for the phantoms: smooth noise fields, pixel grids and anti-aliased curve strokes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw


def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in half-image units: (x, y), each (S, S) float32 in (-1, 1); y points down."""
    c = ((np.arange(size, dtype=np.float32) + 0.5) * (2.0 / size) - 1.0).astype(np.float32)
    return np.broadcast_to(c[None, :], (size, size)), np.broadcast_to(c[:, None], (size, size))


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Band-limited noise: a (cells+1)^2 Gaussian grid upsampled bicubically to (S, S) float32, ~unit std."""
    cells = max(1, int(cells))
    coarse = rng.standard_normal((cells + 1, cells + 1), dtype=np.float32)
    if cells + 1 >= size:
        return coarse[:size, :size].copy()
    field = np.asarray(Image.fromarray(coarse, mode="F").resize((size, size), Image.Resampling.BICUBIC))
    std = float(field.std())
    return (field - field.mean()) / (std if std > 1e-6 else 1.0)


@dataclass(frozen=True)
class Stroke:
    """A curve to draw: ``points`` (N, 2) x/y in half-image units, ``widths`` (N,) in half-image units."""

    points: np.ndarray
    widths: np.ndarray


def supersampling(size: int) -> int:
    """Supersampling factor used for strokes at output size ``size`` (keeps the canvas <= ~2k px)."""
    return 4 if size <= 384 else 2 if size <= 1024 else 1


def rasterize(strokes: list[Stroke], size: int) -> np.ndarray:
    """Coverage (S, S) float32 in [0, 1] of the strokes, drawn at a higher resolution and box-downsampled.

    Widths thinner than one supersampled pixel are drawn 1 px wide at reduced intensity, so very fine
    curves fade out instead of aliasing.
    """
    ss = supersampling(size)
    big = size * ss
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)
    scale = big / 2.0
    for stroke in strokes:
        pts = (stroke.points + 1.0) * scale
        wpx = stroke.widths * scale
        for k in range(len(pts) - 1):
            w = 0.5 * (wpx[k] + wpx[k + 1])
            x0, y0 = pts[k]
            x1, y1 = pts[k + 1]
            if w < 1.0:
                draw.line((x0, y0, x1, y1), fill=max(1, int(255 * w)), width=1)
                continue
            wi = int(round(w))
            draw.line((x0, y0, x1, y1), fill=255, width=wi)
            if wi >= 3:
                r = w / 2.0
                draw.ellipse((x1 - r, y1 - r, x1 + r, y1 + r), fill=255)
    if ss > 1:
        canvas = canvas.reduce(ss)
    return np.asarray(canvas, dtype=np.float32) * (1.0 / 255.0)
