"""The model every client and the server of a ``federated@<method>`` run start from."""

from __future__ import annotations

from collections.abc import Callable

import torch

from dsfed.config import Params
from dsfed.federated.settings import MethodConfig
from dsfed.models import Segmenter, build_model

__all__ = ["model_factory"]


def model_factory(params: Params, spec: MethodConfig, device: torch.device) -> Callable[[], Segmenter]:
    """A builder of the method's model: every call gives identical initial weights (seeded), on ``device``."""

    def build() -> Segmenter:
        torch.manual_seed(params.seed)  # every client and the server start from identical weights
        return build_model(
            spec.model,
            num_classes=len(params.data.classes),
            output_size=params.data.mask_size,
            input_size=spec.input_size,
            prompt=spec.prompt,
            checkpoint=spec.checkpoint,
            classes=tuple(params.data.classes),
            adapter=spec.adapter,
        ).to(device)

    return build
