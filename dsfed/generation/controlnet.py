"""The mask ControlNet: built from the backbone's UNet (pixel-space embedding), saved and loaded as safetensors."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from diffusers import ControlNetModel, UNet2DConditionModel
from safetensors import safe_open
from safetensors.torch import save_file

from dsfed.generation.condition import CONDITION_CHANNELS
from dsfed.provenance import provenance, to_safetensors_metadata
from dsfed.io import atomic_path
from dsfed.models.checkpoint import load_weights, read_state_dict

__all__ = ["EMBEDDING_CHANNELS", "build_controlnet", "load_controlnet", "save_controlnet"]

log = logging.getLogger(__name__)

# One entry: the conditioning embedding then downsamples by 2^(1-1) = 1, so a pixel-space backbone sees
# the condition image at its own sample size (diffusers' default of 4 entries downsamples 8x for SD latents).
EMBEDDING_CHANNELS: tuple[int, ...] = (16,)


def build_controlnet(
    unet: UNet2DConditionModel,
    init: str | Path | None = None,
    embedding_channels: tuple[int, ...] = EMBEDDING_CHANNELS,
) -> ControlNetModel:
    """A ControlNet shaped after ``unet``: its encoder copied from ``unet`` (zero convolutions at zero), or
    the weights in ``init`` (a generic ControlNet's safetensors / .pth), loaded strictly.

    Raises:
        CheckpointError (a DsfedError): ``init`` is missing, unreadable, or does not fit (every missing,
        unexpected and mis-shaped key listed, naming the file).
    """
    controlnet = ControlNetModel.from_unet(
        unet,
        conditioning_embedding_out_channels=embedding_channels,
        conditioning_channels=CONDITION_CHANNELS,
    )
    if init is not None:
        state = {k: v.float() for k, v in read_state_dict(init).items()}
        load_weights(controlnet, state, strict=True, source=str(init))
        log.info("ControlNet initialised from %s", init)
    return controlnet


def save_controlnet(
    controlnet: ControlNetModel, path: str | Path, metadata: dict[str, Any] | None = None, dtype: torch.dtype = torch.float16
) -> Path:
    """Write the ControlNet's weights (as ``dtype``) to ``path`` atomically, ``metadata`` in the header."""
    path = Path(path)
    meta = {**(metadata or provenance()), "format": "dsfed-controlnet/1",
            "conditioning_embedding_out_channels": list(controlnet.config.conditioning_embedding_out_channels)}
    state = {k: v.detach().to("cpu", dtype).contiguous() for k, v in controlnet.state_dict().items()}
    with atomic_path(path, overwrite=True) as tmp:
        save_file(state, str(tmp), metadata=to_safetensors_metadata(meta))
    return path


def load_controlnet(unet: UNet2DConditionModel, path: str | Path) -> ControlNetModel:
    """A ControlNet for ``unet`` with the weights in ``path`` (fp32, CPU); see :func:`build_controlnet`.

    The conditioning embedding's channels come from the file's metadata when it records them.
    """
    channels = EMBEDDING_CHANNELS
    if Path(path).suffix == ".safetensors" and Path(path).is_file():
        with safe_open(str(path), framework="pt") as fh:
            recorded = (fh.metadata() or {}).get("conditioning_embedding_out_channels")
        if recorded:
            channels = tuple(json.loads(recorded))
    return build_controlnet(unet, init=path, embedding_channels=channels)
