"""The ``controlnet@<client>`` stage, at the client: its store and the backbone in, its upload folder
``artifacts/generators/<client>/`` out (ControlNet weights, masks, the ledger of what it uploads)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsfed.stages.backbone import backbone_dir
from dsfed.stages.prepare import client_store

if TYPE_CHECKING:
    from dsfed.config import Params

__all__ = ["generator_dir", "run_controlnet_stage"]


def generator_dir(artifacts: str | Path, client: str) -> Path:
    """What ``controlnet@<client>`` uploads: ``artifacts/generators/<client>``."""
    return Path(artifacts) / "generators" / client


def run_controlnet_stage(params: Params, client: str, artifacts: str | Path, progress: bool = True) -> dict[str, Any]:
    """Fine-tune the generic ControlNet on ``client``'s training pairs and write its upload folder."""
    from dsfed.generation.client import train_client_generator

    return train_client_generator(params, client, client_store(params, client, artifacts), backbone_dir(artifacts),
                                  generator_dir(artifacts, client), progress)
