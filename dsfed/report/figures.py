"""Figures of the report, rendered offline to PNG bytes (matplotlib, Agg) for inlining as data URIs."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["as_jpeg", "curves_png", "data_uri", "honest_ylim", "overlay_html"]


def data_uri(image: bytes, mime: str = "image/png") -> str:
    """``data:<mime>;base64,...`` for an ``<img src>``: the report stays one self-contained file."""
    return f"data:{mime};base64," + base64.b64encode(image).decode()


def as_jpeg(png: bytes, quality: int = 85) -> bytes:
    """Re-encode a picture (e.g. a synthetic-data grid PNG) as JPEG: about 6x smaller for photographs."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def curves_png(panels: Sequence[tuple[str, str, Mapping[str, tuple[Sequence[float], Sequence[float]]]]]) -> bytes:
    """One row of line plots. ``panels``: (title, x label, {series name: (xs, ys)}) each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
    for ax, (title, xlabel, series) in zip(axes[0], panels):
        for name, (xs, ys) in series.items():
            ax.plot(xs, ys, marker="o", markersize=3, label=name)
        limits = honest_ylim([y for _, ys in series.values() for y in ys])
        if limits is not None:
            ax.set_ylim(*limits)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        if series:
            ax.legend(fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


def honest_ylim(values: Sequence[float], min_span: float = 0.1) -> tuple[float, float] | None:
    """Y limits for scores in [0, 1] spanning at least ``min_span`` (centred on the data, inside [0, 1]), so a
    0.01 change does not fill the panel; None (matplotlib's own) for other values or none."""
    finite = [float(v) for v in values if v is not None and np.isfinite(v)]
    if not finite or min(finite) < 0 or max(finite) > 1:
        return None
    lo, hi = min(finite), max(finite)
    pad = max(min_span - (hi - lo), 0.0) / 2 + 0.01
    lo, hi = lo - pad, hi + pad
    if lo < 0:
        lo, hi = 0.0, min(1.0, hi - lo)
    if hi > 1:
        lo, hi = max(0.0, lo - (hi - 1)), 1.0
    return lo, hi


def _outlined_tiles(images: np.ndarray, masks: np.ndarray, size: int) -> list[np.ndarray]:
    """(N, 3, S, S) uint8 images and (N, K, Sm, Sm) {0, 1} masks -> N tiles (3, size, size), each class outlined
    2 px wide (the mask's boundary and the ring just outside it)."""
    import torch

    from dsfed.generation.grid import outline

    big = torch.nn.functional.interpolate(torch.as_tensor(images).float(), size=(size, size), mode="bicubic", align_corners=False)
    big_images = big.clamp(0, 255).round().to(torch.uint8).numpy()
    tiles = []
    for i in range(len(images)):
        m = torch.nn.functional.interpolate(torch.as_tensor(masks[i : i + 1]).float(), size=(size, size), mode="nearest")[0]
        grown = torch.nn.functional.max_pool2d(m[None], 3, stride=1, padding=1)[0] if m.numel() else m
        tiles.append(outline(outline(big_images[i], grown.numpy().astype(np.uint8)), m.numpy().astype(np.uint8)))
    return tiles


def overlay_html(images: np.ndarray, columns: Sequence[tuple[str, np.ndarray]], alt: str) -> str:
    """Test images with each model's masks outlined, as HTML: one captioned card per model (the first column
    usually the ground truth) captioned above its N images stacked at 256 px or more, the cards wrapping across the page, so
    tiles stay large and every model's name stays legible text whatever the number of models.

    Args:
        images: (N, 3, S, S) uint8. columns: (title, masks (N, K, Sm, Sm) {0, 1}) per card.
    """
    from PIL import Image

    size = max(images.shape[-1], 256)
    cards = []
    for title, masks in columns:
        gap = np.full((6, size, 3), 255, np.uint8)   # white between the stacked images
        tiles = [t.transpose(1, 2, 0) for t in _outlined_tiles(images, masks, size)]
        strip = np.concatenate([part for tile in tiles for part in (tile, gap)][:-1], axis=0)
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(strip)).save(buffer, format="JPEG", quality=88)
        label = html.escape(title)
        cards.append(f"<figure class='card'><figcaption>{label}</figcaption><img src='{data_uri(buffer.getvalue(), 'image/jpeg')}' "
                     f"width='{size}' alt='{html.escape(alt)}: {label}'></figure>")
    return "<div class='cards'>" + "".join(cards) + "</div>"
