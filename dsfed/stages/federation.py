"""The federation's roster: which client stores the ``federated@<method>`` stages read, with their content hashes.

The ``federation`` stage writes ``artifacts/federation/roster.json`` and every federated stage depends on
that file instead of on ``artifacts/clients`` as a whole. A client that joins outside the federation
(``federated.clients`` pinned) therefore leaves the file byte-identical, and DVC keeps every federated
model; a changed store inside the federation changes its hash, and the federated stages rerun.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from dsfed.config import Params
from dsfed.errors import DsfedError
from dsfed.io import write_json
from dsfed.stages.prepare import store_path

__all__ = ["roster", "tree_sha256", "write_roster"]

CHUNK = 1 << 20


def tree_sha256(root: str | Path) -> str:
    """SHA-256 over a folder's files: each file's path relative to ``root`` and its bytes, in sorted order."""
    root = Path(root)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        with path.open("rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def roster(params: Params, artifacts: str | Path) -> dict[str, Any]:
    """``{"clients": {name: {"store_sha256", "role"}}, "pinned": bool}`` for the federation, in params order.

    Raises:
        DsfedError: a federation client has no store yet (its ``prepare@<client>`` has not run).
    """
    clients: dict[str, dict[str, str]] = {}
    for name in params.federation:
        store = store_path(artifacts, name)
        if not (store / "zarr.json").is_file():
            raise DsfedError(f"clients.{name}: no client store at {store} (run `dvc repro prepare@{name}`)")
        role = "test only (held out)" if name == params.data.holdout else "train"
        clients[name] = {"store_sha256": tree_sha256(store), "role": role}
    return {"clients": clients, "pinned": params.federated.clients is not None}


def write_roster(params: Params, artifacts: str | Path) -> Path:
    """Write ``<artifacts>/federation/roster.json`` (atomically) and return its path."""
    out = Path(artifacts) / "federation" / "roster.json"
    write_json(out, roster(params, artifacts))
    return out
