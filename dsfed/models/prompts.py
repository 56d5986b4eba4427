"""Box prompts derived from masks (MedSAM style): the tight box around the foreground, jittered."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["boxes_from_masks"]


def boxes_from_masks(masks: Tensor, jitter: float = 0.05, generator: torch.Generator | None = None) -> Tensor:
    """Boxes around the foreground of every sample.

    Args:
        masks: (B, C, H, W) {0, 1}; the box covers the union of all classes.
        jitter: each side moves by up to ``jitter`` (fraction of the image side) at random, as MedSAM
            perturbs its training boxes. 0 for the tight box.
        generator: seeds the jitter.

    Returns:
        (B, 4) float (x0, y0, x1, y1) in [0, 1] image coordinates; an empty mask gives the whole image.
    """
    b, _, h, w = masks.shape
    fg = masks.amax(dim=1) > 0.5  # (B, H, W)
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0]]).repeat(b, 1)
    rows, cols = fg.any(dim=2), fg.any(dim=1)  # (B, H), (B, W)
    for i in range(b):
        if not rows[i].any():
            continue
        ys, xs = torch.nonzero(rows[i]).flatten(), torch.nonzero(cols[i]).flatten()
        boxes[i] = torch.tensor([xs.min() / w, ys.min() / h, (xs.max() + 1) / w, (ys.max() + 1) / h])
    if jitter > 0:
        boxes = boxes + (torch.rand(b, 4, generator=generator) * 2 - 1) * jitter
    return boxes.clamp(0.0, 1.0)
