"""Training augmentation for (image, mask) pairs of different sizes, built from MONAI transforms."""

from __future__ import annotations

import math
from typing import Any

import torch
from monai.transforms import (
    Compose,
    RandAdjustContrastd,
    RandAffine,
    RandFlipd,
    RandGaussianNoised,
    Randomizable,
    RandScaleIntensityd,
)

from dsfed.data.settings import AugmentConfig

__all__ = ["AugmentConfig", "JointRandAffined", "build_augment"]


class JointRandAffined(Randomizable):
    """One random rotation/scale about the centre applied to an image and a mask of different sizes.

    MONAI's ``RandAffined`` builds its sampling grid from the first key's size and reuses it for every
    key, which misaligns a mask of another size. Here the parameters are drawn once and each key is
    resampled on a grid of its own size (no translation, so centre-based transforms line up).
    """

    def __init__(self, prob: float, rotate: float, scale: float) -> None:
        self.prob = prob
        self.affine = RandAffine(prob=1.0, rotate_range=rotate, scale_range=(scale, scale), padding_mode="zeros")
        self._do = False

    def set_random_state(self, seed: int | None = None, state: Any = None) -> JointRandAffined:
        super().set_random_state(seed, state)
        self.affine.set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:
        self._do = self.R.random_sample() < self.prob
        if self._do:
            self.affine.randomize()

    def __call__(self, data: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self.randomize()
        if not self._do:
            return data
        out = dict(data)
        out["image"] = self.affine(data["image"], mode="bilinear", randomize=False)
        out["mask"] = self.affine(data["mask"], mode="nearest", randomize=False)
        return out


def build_augment(cfg: AugmentConfig, seed: int | None = None) -> Compose:
    """A MONAI ``Compose`` acting on ``{"image": (3,S,S) float [0,1], "mask": (K,Sm,Sm) float}``.

    Flips and affine act on both keys with one random draw (bilinear for the image, nearest for the
    mask); gamma, per-channel colour gain and noise act on the image only.
    """
    keys = ["image", "mask"]
    transforms: list[Any] = [
        RandFlipd(keys=keys, prob=cfg.flip, spatial_axis=1),
        JointRandAffined(prob=cfg.affine, rotate=math.radians(cfg.rotate_deg), scale=cfg.scale),
        RandAdjustContrastd(keys="image", prob=cfg.gamma, gamma=(0.7, 1.5)),
        RandScaleIntensityd(keys="image", prob=cfg.color, factors=0.15, channel_wise=True),
        RandGaussianNoised(keys="image", prob=1.0 if cfg.noise_std else 0.0, std=cfg.noise_std),
    ]
    compose = Compose(transforms)
    if seed is not None:
        compose.set_random_state(seed=seed)
    return compose
