"""The condition image a ControlNet sees: a fixed, class-agnostic rendering of any multi-label mask as 3 channels."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = ["CONDITION_CHANNELS", "render_condition"]

CONDITION_CHANNELS = 3


def render_condition(masks: Tensor | np.ndarray, size: int) -> Tensor:
    """Render masks as the ControlNet condition image, the same way at training and at sampling.

    Rule (K classes, in the stores' class order, e.g. optic_disc, optic_cup):
        K = 1: (class 0, 0, background); K = 2: (class 0, class 1, background); K = 3: (class 0, 1, 2);
        K > 3: (union, level, background), level = (1 + the last class covering the pixel) / K,
    where background = 1 - (union of the classes). The rule names no class: every one-class task (lesion,
    polyp, a user's tumour) draws the same channels, so the generic ControlNet pre-trained on several
    tasks is a start for any. With K != 3 a rendered mask is never all zeros, so the zeroed condition that
    classifier-free guidance uses means "no condition", not "empty mask".
    The result is resized to ``size`` with antialiased bilinear interpolation (soft edges in [0, 1]).

    Args:
        masks: (K, H, W) or (N, K, H, W), values in {0, 1} (any dtype).

    Returns:
        (3, size, size) or (N, 3, size, size) float32 in [0, 1], on the masks' device.
    """
    m = torch.as_tensor(masks)
    single = m.ndim == 3
    if single:
        m = m[None]
    if m.ndim != 4:
        raise ValueError(f"masks must be (K, H, W) or (N, K, H, W), got shape {tuple(m.shape)}")
    k = m.shape[1]
    if k < 1:
        raise ValueError("masks have no class channel; the condition image renders 1 or more classes")
    m = (m > 0).float()
    if k > CONDITION_CHANNELS:
        union = m.amax(dim=1, keepdim=True)
        ranks = torch.arange(1, k + 1, device=m.device, dtype=m.dtype).view(1, k, 1, 1)
        level = (m * ranks).amax(dim=1, keepdim=True) / k
        m = torch.cat([union, level, 1.0 - union], dim=1)
    elif k < CONDITION_CHANNELS:
        background = 1.0 - m.amax(dim=1, keepdim=True)
        pad = m.new_zeros(m.shape[0], CONDITION_CHANNELS - 1 - k, *m.shape[2:])
        m = torch.cat([m, pad, background], dim=1)
    if m.shape[-2:] != (size, size):
        m = F.interpolate(m, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(0.0, 1.0)
    return m[0] if single else m
