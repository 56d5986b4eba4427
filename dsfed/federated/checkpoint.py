"""Rounds checkpoints: a directory per completed round, written atomically, then a ``latest`` pointer.

The server's checkpoint holds the global state only (weights, strategy state, this process's RNGs,
the history); every client keeps its own state (:mod:`dsfed.federated.engines.client_state`).
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dsfed.federated.errors import CheckpointError
from dsfed.federated.protocol import Weights
from dsfed.federated.serialize import from_bytes, to_bytes
from dsfed.federated.strategies.base import Strategy
from dsfed.io import atomic_path, write_json

__all__ = ["CHECKPOINT_SCHEMA", "Checkpoint", "capture_rng", "latest_checkpoint", "remove_stale_temps", "restore_rng", "save_checkpoint"]

CHECKPOINT_SCHEMA = 2  # 2: client states live with the clients; named weight groups
LATEST = "latest"
_ROUND_DIR = re.compile(r"^round-(\d+)$")
log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# RNG states (all as tensors / plain values, so they load with torch.load(weights_only=True))
# --------------------------------------------------------------------------------------------------


def capture_rng() -> dict[str, Any]:
    """The process-global RNG states: torch (CPU and every CUDA device), numpy's global, python ``random``."""
    np_state = np.random.get_state(legacy=False)
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Put back what :func:`capture_rng` returned."""
    torch.set_rng_state(state["torch"])
    npst = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": npst["bit_generator"],
            "state": {"key": npst["key"].numpy().astype(np.uint32), "pos": npst["pos"]},
            "has_gauss": npst["has_gauss"],
            "gauss": npst["gauss"],
        }
    )
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _dir_name(round: int) -> str:
    return f"round-{round:04d}"


def remove_stale_temps(root: Path) -> None:
    """Remove temporary siblings a killed writer left in ``root`` (``.round-*.tmp-*``, ``.latest.tmp-*``)."""
    for path in list(root.glob(".round-*.tmp-*")) + list(root.glob(f".{LATEST}.tmp-*")):
        log.info("removing an unfinished checkpoint %s", path)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def save_checkpoint(
    root: Path,
    round: int,
    groups: Mapping[str, Weights],
    strategy: Strategy,
    clients: Mapping[str, str],
    history: list[dict[str, Any]],
    config_hash: str,
    keep: int = 2,
) -> Path:
    """Write ``root/round-NNNN/`` atomically, point ``root/latest`` at it, keep only the last ``keep`` rounds.

    Layout: ``weights/<group>.safetensors`` (each named weight group), ``strategy.pt``, ``rng.pt`` (this
    process's RNGs) and ``meta.json`` (round, config hash, strategy, each training client's group, history). A kill at any moment leaves ``latest``
    pointing at a complete directory.
    """
    root.mkdir(parents=True, exist_ok=True)
    final = root / _dir_name(round)
    with atomic_path(final, overwrite=True) as tmp:
        (tmp / "weights").mkdir(parents=True)
        for group, weights in groups.items():
            (tmp / "weights" / f"{_safe(group)}.safetensors").write_bytes(to_bytes(weights))
        torch.save(strategy.state_dict(), tmp / "strategy.pt")
        torch.save(capture_rng(), tmp / "rng.pt")
        meta = {
            "schema": CHECKPOINT_SCHEMA,
            "round": round,
            "config_hash": config_hash,
            "strategy": strategy.name,
            "clients": dict(clients),
            "groups": list(groups),
            "history": history,
        }
        write_json(tmp / "meta.json", meta)
    with atomic_path(root / LATEST, overwrite=True) as tmp:
        tmp.write_text(final.name + "\n")
    _prune(root, round, keep)
    return final


def _prune(root: Path, current: int, keep: int) -> None:
    for path in root.iterdir():
        match = _ROUND_DIR.match(path.name)
        if match and path.is_dir() and not current - keep < int(match.group(1)) <= current:
            shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """A completed round on disk (its ``meta.json``); the tensors are loaded on demand."""

    path: Path
    round: int
    config_hash: str
    strategy: str
    clients: dict[str, str]
    groups: list[str]
    history: list[dict[str, Any]]

    def load_groups(self) -> dict[str, Weights]:
        """The named weight groups (shared keys) after this round."""
        return {group: from_bytes((self.path / "weights" / f"{_safe(group)}.safetensors").read_bytes()) for group in self.groups}

    def load_states(self, strategy: Strategy) -> None:
        """Restore the strategy's state and this process's RNGs (clients restore their own)."""
        strategy.load_state_dict(_torch_load(self.path / "strategy.pt", self.path.parent))
        restore_rng(_torch_load(self.path / "rng.pt", self.path.parent))


def _torch_load(path: Path, root: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user-facing problem
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"{path}: cannot load checkpoint state ({first}); delete {root} to start over") from exc


def latest_checkpoint(root: str | os.PathLike[str]) -> Checkpoint | None:
    """The checkpoint ``root/latest`` points at, or None when there is none yet."""
    root = Path(root)
    pointer = root / LATEST
    if not pointer.exists():
        return None
    path = root / pointer.read_text().strip()
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{pointer}: points at {path.name}, which cannot be read ({exc}); delete {root} to start over") from exc
    if meta.get("schema") != CHECKPOINT_SCHEMA:
        raise CheckpointError(f"{path}: checkpoint schema {meta.get('schema')} (expected {CHECKPOINT_SCHEMA}); delete {root} to start over")
    return Checkpoint(path, int(meta["round"]), meta["config_hash"], meta["strategy"], meta["clients"], meta["groups"], meta["history"])
