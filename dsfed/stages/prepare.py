"""The ``prepare@<client>`` stage: a client's data (any importer) into ``artifacts/clients/<client>/data.zarr``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dsfed.config import Params

__all__ = ["client_store", "run_prepare_stage", "store_path"]


def store_path(artifacts: str | Path, client: str) -> Path:
    """Where ``prepare@<client>`` writes (and every client-side stage reads): ``artifacts/clients/<client>/data.zarr``."""
    return Path(artifacts) / "clients" / client / "data.zarr"


def client_store(params: Params, client: str, artifacts: str | Path) -> Path:
    """``client``'s store path, after checking that params declares the client (one line naming it otherwise)."""
    if client not in params.clients:
        from dsfed.errors import DsfedError

        raise DsfedError(f"clients.{client}: no such client (have: {', '.join(params.clients)})")
    return store_path(artifacts, client)


def run_prepare_stage(params: Params, client: str, artifacts: str | Path, root: str | Path = ".", overwrite: bool = False,
                      progress: bool = True) -> Path:
    """Build ``client``'s store from ``clients.<client>.source`` (paths relative to ``root``); returns its path."""
    from dsfed.data.store import build_client_store

    return build_client_store(params, client, store_path(artifacts, client), root=root, overwrite=overwrite, progress=progress)
