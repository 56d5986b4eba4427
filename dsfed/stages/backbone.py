"""The ``backbone`` stage: the configured diffusion backbone resolved into ``artifacts/backbone/manifest.json``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dsfed.config import Params

__all__ = ["backbone_dir", "run_backbone_stage"]


def backbone_dir(artifacts: str | Path) -> Path:
    """Where the ``backbone`` stage writes (and every generation stage reads the manifest): ``artifacts/backbone``."""
    return Path(artifacts) / "backbone"


def run_backbone_stage(params: Params, artifacts: str | Path, root: str | Path = ".", progress: bool = True) -> dict[str, Any]:
    """Resolve ``params.backbone`` (paths relative to ``root``) into the stage's folder."""
    from dsfed.generation.backbones import prepare_backbone

    return prepare_backbone(params, backbone_dir(artifacts), root=root, progress=progress)
