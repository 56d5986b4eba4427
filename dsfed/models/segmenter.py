"""The one segmenter interface every model follows: images (B,3,S,S) in [0,1] -> logits (B,C,Sm,Sm)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PromptMode = Literal["none", "box"]

__all__ = ["PromptMode", "Segmenter", "resize"]


def resize(x: Tensor, size: int, mode: str = "bilinear") -> Tensor:
    """Resize (B, C, H, W) to (B, C, size, size); antialiased when shrinking. No-op at the same size."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    shrink = x.shape[-1] > size
    if mode == "nearest":
        return F.interpolate(x, size=(size, size), mode="nearest")
    if shrink and x.dtype not in (torch.float32, torch.float64):  # no antialiased kernel for bf16/fp16
        return F.interpolate(x.float(), size=(size, size), mode=mode, align_corners=False, antialias=True).to(x.dtype)
    return F.interpolate(x, size=(size, size), mode=mode, align_corners=False, antialias=shrink)


class Segmenter(nn.Module):
    """Base class: a segmentation model with a fixed input size, class count and output size.

    Subclasses implement :meth:`predict` on images already resized to ``input_size``; :meth:`forward`
    handles resizing in and out, so callers feed store images (any S) and get logits at ``output_size``.

    Args:
        num_classes: C, one logit channel per class (multi-label: sigmoid per channel).
        input_size: the side the model runs at (SAM: its encoder's image size).
        output_size: Sm, the side of the returned logits (the stores' mask size).
        prompt: 'none' (prompt-free, the DSFedMed setting) or 'box' (a box per image).

    ``frozen_keys``: regexes over state-dict keys this model never trains (e.g. the image encoder under
    FedMSA's adapters); the federated core neither sends nor checkpoints them at the clients, which hold
    them from the same foundation checkpoint.
    """

    frozen_keys: tuple[str, ...] = ()

    def __init__(self, num_classes: int, input_size: int, output_size: int, prompt: PromptMode = "none") -> None:
        super().__init__()
        self.num_classes = num_classes
        self.input_size = input_size
        self.output_size = output_size
        self.prompt = prompt

    def predict(self, images: Tensor, boxes: Tensor | None) -> Tensor:
        """(B, 3, input_size, input_size) in [0, 1] -> logits (B, C, h, w) at the model's own resolution."""
        raise NotImplementedError

    def forward(self, images: Tensor, boxes: Tensor | None = None) -> Tensor:
        """Segment a batch.

        Args:
            images: (B, 3, S, S) float in [0, 1], any S.
            boxes: (B, 4) float boxes (x0, y0, x1, y1) in [0, 1] image coordinates; required when
                ``prompt == 'box'``, ignored otherwise.

        Returns:
            logits: (B, C, output_size, output_size).
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, S, S), got {tuple(images.shape)}")
        if self.prompt == "box" and boxes is None:
            raise ValueError("this segmenter was built with prompt='box': pass boxes (B, 4)")
        logits = self.predict(resize(images, self.input_size), boxes if self.prompt == "box" else None)
        return resize(logits, self.output_size)

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


def check_boxes(boxes: Tensor, batch: int) -> Tensor:
    """Validate (B, 4) boxes in [0, 1]."""
    if boxes.shape != (batch, 4):
        raise ValueError(f"boxes must be ({batch}, 4), got {tuple(boxes.shape)}")
    return boxes.to(torch.float32)
