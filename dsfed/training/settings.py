"""Settings of local training: the loss."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from dsfed.settings import Strict

__all__ = ["LossConfig"]


class LossConfig(Strict):
    """Training loss: BCE with ``pos_weight`` (DSFedMed: 2) plus ``dice`` x MONAI Dice loss."""

    name: Literal["bce_dice"] = "bce_dice"
    pos_weight: Annotated[float, Field(gt=0)] = 2.0
    dice: Annotated[float, Field(ge=0)] = 0.0
