"""The ``quality@<client>`` stage, at the client: its store and its synthetic set in, the audit numbers
``artifacts/quality/<client>/`` out (quality.json, grid.png, the audit ledger)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsfed.stages.prepare import client_store
from dsfed.stages.synthesize import synthetic_path

if TYPE_CHECKING:
    from dsfed.config import Params

__all__ = ["quality_dir", "run_quality_stage"]


def quality_dir(artifacts: str | Path, client: str) -> Path:
    """Where ``quality@<client>`` writes: ``artifacts/quality/<client>``."""
    return Path(artifacts) / "quality" / client


def run_quality_stage(params: Params, client: str, artifacts: str | Path, progress: bool = True) -> dict[str, Any]:
    """Audit ``client``'s synthetic set against its real data."""
    from dsfed.generation.audit import audit_client

    return audit_client(params, client, client_store(params, client, artifacts), synthetic_path(artifacts, client),
                        quality_dir(artifacts, client), progress)
