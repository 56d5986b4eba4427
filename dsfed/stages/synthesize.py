"""The ``synthesize@<client>`` stage, at the server: the client's uploads (never its store) and the backbone in,
``artifacts/synthetic/<client>/data.zarr`` out."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsfed.stages.backbone import backbone_dir
from dsfed.stages.controlnet import generator_dir

if TYPE_CHECKING:
    from dsfed.config import Params

__all__ = ["run_synthesize_stage", "synthetic_path"]


def synthetic_path(artifacts: str | Path, client: str) -> Path:
    """Where ``synthesize@<client>`` writes: ``artifacts/synthetic/<client>/data.zarr``."""
    return Path(artifacts) / "synthetic" / client / "data.zarr"


def run_synthesize_stage(params: Params, client: str, artifacts: str | Path, progress: bool = True) -> dict[str, Any]:
    """Sample ``client``'s synthetic set from its uploads."""
    from dsfed.generation.server import synthesize_client
    from dsfed.timings import record_measured

    summary = synthesize_client(params, client, generator_dir(artifacts, client), backbone_dir(artifacts),
                                synthetic_path(artifacts, client), progress)
    if not summary.get("held_out"):
        record_measured(artifacts, f"synthesize@{client}", {k: summary[k] for k in ("seconds", "images_per_s", "device")})
    return summary
