"""Settings of the ``server_sam`` stage (the server SAM's fine-tune on the synthetic sets)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator

from dsfed.data.settings import AugmentConfig
from dsfed.settings import Device, Strict, known_model
from dsfed.training.settings import LossConfig

__all__ = ["ServerSamConfig"]


class ServerSamConfig(Strict):
    """``server_sam``, at the server: fine-tune the foundation SAM on the union of every source client's
    synthetic train split, and keep one epoch (0 is the foundation itself), chosen by ``select``:

    - ``real``: the best mean Dice on the source clients' *real* val splits, scored at the clients (the
      weights go down, only metrics come back; every payload in ``artifacts/server_sam/ledger.csv``). A
      synthetic fine-tune that does not help on real images keeps the foundation as the teacher.
    - ``synthetic``: the best mean Dice on their synthetic val splits (DSFedMed's code; no traffic).

    Both curves are recorded in ``metrics.json`` and ``dvclive/``.

    ``checkpoint``: where the foundation weights come from: the embedded default's pre-trained
    ``sam_demo`` (``dsfed pretrain-sam``), or an official SAM ``.pth`` for ``sam_vit_b|l|h``. Required: the
    method starts from a foundation model, and ``dvc.yaml`` depends on the file. One trained for other
    classes loads with its class head re-initialised.
    """

    model: str = "sam_demo"
    checkpoint: Path = Path("data/pretrained/embedded/sam_demo.safetensors")
    input_size: Annotated[int, Field(ge=16)] | None = None
    epochs: Annotated[int, Field(ge=0)] = 4
    batch_size: Annotated[int, Field(ge=1)] = 4
    lr: Annotated[float, Field(gt=0)] = 1e-4
    loss: LossConfig = LossConfig(dice=0.5)
    augment: AugmentConfig = AugmentConfig()
    freeze_encoder: bool = False
    select: Literal["real", "synthetic"] = "real"
    amp: bool = False
    device: Device = "auto"

    _known_model = field_validator("model")(known_model)

    @field_validator("checkpoint", mode="before")
    @classmethod
    def _required(cls, value: object) -> object:
        if value is None or value == "":
            raise ValueError("required: the server SAM starts from a foundation checkpoint and dvc.yaml depends on the "
                             "file (a checkpoint with other classes loads with its class head re-initialised)")
        return value
