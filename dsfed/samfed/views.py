"""Views of a client's images for SAM-Fed: the strong (photometric) view, and a model's flip-averaged predictions.

The strong view changes only intensities, never geometry, so the cached teacher probabilities and the weak
view's labels stay aligned pixel for pixel (a flip is applied to both beforehand).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from dsfed.data.store import ClientStore
from dsfed.models import Segmenter

__all__ = ["photometric", "predict_probs"]


def photometric(images: Tensor, generator: torch.Generator, brightness: float = 0.2, contrast: float = 0.25,
                gamma: float = 0.35, noise: float = 0.03) -> Tensor:
    """A strong photometric view: per-image brightness, contrast, gamma and Gaussian noise, clamped to [0, 1].

    images: (B, 3, S, S) in [0, 1] -> (B, 3, S, S). Draws from ``generator`` (CPU) so a round repeats exactly.
    """
    b = len(images)

    def draw(scale: float) -> Tensor:
        return ((torch.rand(b, generator=generator) * 2 - 1) * scale).view(b, 1, 1, 1).to(images.device)

    x = images.clamp(0, 1) ** torch.exp(draw(gamma))
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * (1 + draw(contrast)) + mean + draw(brightness)
    x = x + noise * torch.randn(x.shape, generator=generator).to(images.device)
    return x.clamp(0, 1)


@torch.no_grad()
def predict_probs(model: Segmenter, store: ClientStore, rows: Sequence[int], batch_size: int, device: torch.device,
                  flip: bool = True) -> Tensor:
    """Sigmoid probabilities of ``model`` on the store's images ``rows``: (len(rows), C, Sm, Sm) float32 on CPU.

    ``flip``: average with the horizontally flipped image's prediction (flipped back). Reads images only.
    """
    model.eval()
    out = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        images = torch.from_numpy(np.stack([np.asarray(store.images[int(r)], dtype=np.float32) for r in chunk]) / 255.0).to(device)
        probs = torch.sigmoid(model(images))
        if flip:
            probs = 0.5 * (probs + torch.sigmoid(model(images.flip(-1))).flip(-1))
        out.append(probs.float().cpu())
    return torch.cat(out)
