"""Summaries and preview grids of client stores, for the CLI, Prefect artifacts and reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from dsfed.data.mask_checks import foreground_shares
from dsfed.data.splits import SPLITS
from dsfed.data.store import ClientStore
from dsfed.io import atomic_path

__all__ = ["preview_grid", "store_summary"]

CLASS_COLOURS = [(0, 255, 0), (0, 160, 255), (255, 0, 255), (255, 255, 0), (255, 96, 0)]


def store_summary(store: ClientStore) -> dict[str, Any]:
    """Counts per split, sizes, and mean foreground fraction per class (over the readable splits)."""
    # the held-out client's train/val are not readable by design (HeldOutError): they are empty
    counts = {name: 0 if store.is_holdout and name != "test" else len(store.split(name)) for name in SPLITS}
    readable = _mask_rows(store)
    if len(readable):
        masks = np.stack([np.asarray(store.masks[int(r)]) for r in readable])
        fraction = foreground_shares(masks)
    else:
        fraction = np.full(len(store.classes), np.nan)
    table = [
        {
            "client": store.client,
            "role": store.attrs["role"],
            **counts,
            "image": f"3x{store.attrs['image_size']}x{store.attrs['image_size']}",
            "mask": f"{len(store.classes)}x{store.attrs['mask_size']}x{store.attrs['mask_size']}",
            **{f"fg_{c}": round(float(f), 4) for c, f in zip(store.classes, fraction)},
        }
    ]
    return {"client": store.client, "samples": len(store), "splits": counts, "table": table}


def _mask_rows(store: ClientStore) -> np.ndarray:
    """The rows whose masks may be read: every row, or the test split's for a held-out or ``test_only`` client,
    or none (``labels: none``)."""
    if store.labels == "none":
        return np.zeros(0, dtype=np.int64)
    return store.split("test") if store.is_holdout or store.labels == "test_only" else store.split("all")


def _outline(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a (H, W) bool mask."""
    inner = mask.copy()
    inner[1:-1, 1:-1] = mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
    return mask & ~inner


def _tile(image: np.ndarray, mask: np.ndarray, size: int) -> Image.Image:
    """(3,S,S) uint8 image with (K,Sm,Sm) mask outlines drawn over it, as a size x size RGB tile."""
    tile = Image.fromarray(image.transpose(1, 2, 0)).resize((size, size), Image.Resampling.BICUBIC)
    pixels = np.asarray(tile).copy()
    for k, channel in enumerate(mask):
        up = np.asarray(Image.fromarray(channel.astype(np.uint8) * 255).resize((size, size), Image.Resampling.NEAREST)) > 127
        pixels[_outline(up)] = CLASS_COLOURS[k % len(CLASS_COLOURS)]
    return Image.fromarray(pixels)


def preview_grid(stores: list[ClientStore], out: str | Path, per_store: int = 8, tile: int = 128) -> Path:
    """Write a PNG: one row per store (client name on the left), ``per_store`` samples with mask outlines."""
    label_w = 90
    grid = Image.new("RGB", (label_w + per_store * tile, len(stores) * tile), "white")
    draw = ImageDraw.Draw(grid)
    for r, store in enumerate(stores):
        rows = _mask_rows(store)[:per_store] if store.labels != "none" else store.split("all")[:per_store]
        draw.text((6, r * tile + tile // 2 - 6), f"{store.client}{' (held out)' if store.is_holdout else ''}", fill="black")
        for c, row in enumerate(rows):
            mask = np.asarray(store.masks[int(row)]) if store.labels != "none" else np.zeros((0, 1, 1), dtype=np.uint8)
            grid.paste(_tile(store.images[int(row)], mask, tile), (label_w + c * tile, r * tile))
    out = Path(out)
    with atomic_path(out, overwrite=True) as tmp:
        grid.save(tmp, format="PNG")
    return out
