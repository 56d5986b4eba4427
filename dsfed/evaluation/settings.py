"""Settings of the ``evaluate`` stage."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from dsfed.settings import Device, Strict

__all__ = ["EvaluateConfig"]


class EvaluateConfig(Strict):
    """``evaluate``: every model on every client's test split (the held-out client's whole store).

    Per-image Dice, IoU and HD95 (MONAI); mean, std and a percentile ``bootstrap`` interval at ``ci``;
    inference time measured over ``timing_images`` images after a warm-up; ``overlays`` test images
    per client are drawn with each model's prediction for the report.
    """

    bootstrap: Annotated[int, Field(ge=0)] = 1000
    ci: Annotated[float, Field(gt=0, lt=1)] = 0.95
    hd95: bool = True
    timing_images: Annotated[int, Field(ge=1)] = 16
    overlays: Annotated[int, Field(ge=0, le=16)] = 2
    device: Device = "auto"
