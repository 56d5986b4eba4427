"""Rounds checkpoints: a directory per completed round, written atomically, then a ``latest`` pointer.

The server's checkpoint holds the global state only (weights, strategy state, this process's RNGs,
the history); every client keeps its own state (:mod:`dsfed.federated.engines.client_state`).
"""

from __future__ import annotations

import logging
import os
import random
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
from dsfed.io import safe_name
from dsfed.round_checkpoints import RoundCheckpointer

__all__ = ["CHECKPOINT_SCHEMA", "Checkpoint", "capture_rng", "latest_checkpoint", "remove_stale_temps", "restore_rng", "save_checkpoint"]

CHECKPOINT_SCHEMA = 3  # 2: client states live with the clients; 3: named weight groups, the common round checkpointer
log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# RNG states (all as tensors / plain values, so they load with torch.load(weights_only=True))
# --------------------------------------------------------------------------------------------------


def capture_rng() -> dict[str, Any]:
    """The process-global RNG states: torch (CPU and every CUDA device) and numpy's global.

    Python's ``random`` is left out: no dsfed code draws from it outside client work (which seeds it and puts it
    back, :mod:`dsfed.federated.rng`), while libraries in the stage's process draw from it on their own clock: the
    keepalive pings of Prefect's event client (websockets, ``random.getrandbits(32)`` per ping on a timer in a
    background thread) and Prefect's run names (coolname). Its state at a round's end therefore differed between
    two identical runs (measured: two fresh clones' demos) and made the checkpoint's bytes and ``dvc.lock`` differ.
    """
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
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
    if "python" in state:  # checkpoints written before Python's state was left out
        py = state["python"]
        random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------------------------------
# Writing and reading (through the one round checkpointer)
# --------------------------------------------------------------------------------------------------


def remove_stale_temps(root: Path) -> None:
    """Remove temporary siblings a killed writer left in ``root``."""
    RoundCheckpointer(root, "", CHECKPOINT_SCHEMA).remove_stale_temps()


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
    process's RNGs) and ``meta.json`` (schema, round, run = config hash, strategy, each training client's
    group, history). Written by :class:`~dsfed.round_checkpoints.RoundCheckpointer`.
    """

    def write(tmp: Path) -> None:
        (tmp / "weights").mkdir()
        for group, weights in groups.items():
            (tmp / "weights" / f"{safe_name(group)}.safetensors").write_bytes(to_bytes(weights))
        torch.save(strategy.state_dict(), tmp / "strategy.pt")
        torch.save(capture_rng(), tmp / "rng.pt")

    meta = {"strategy": strategy.name, "clients": dict(clients), "groups": list(groups), "history": history}
    return RoundCheckpointer(root, config_hash, CHECKPOINT_SCHEMA, keep).save(round, write, meta)


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
        return {group: from_bytes((self.path / "weights" / f"{safe_name(group)}.safetensors").read_bytes()) for group in self.groups}

    def load_states(self, strategy: Strategy) -> None:
        """Restore the strategy's state and this process's RNGs (clients restore their own)."""
        strategy.load_state_dict(_torch_load(self.path / "strategy.pt", self.path.parent))
        restore_rng(_torch_load(self.path / "rng.pt", self.path.parent))


def _torch_load(path: Path, root: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file is the same user-facing problem
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"{path}: cannot load checkpoint state ({first}); delete {root} to start over") from exc


def latest_checkpoint(root: str | os.PathLike[str]) -> Checkpoint | None:
    """The checkpoint ``root/latest`` points at (of any run: the rounds loop compares the config hash), or None."""
    found = RoundCheckpointer(root, "", CHECKPOINT_SCHEMA).latest(check_run=False)
    if found is None:
        return None
    meta = found.meta
    return Checkpoint(found.path, found.round, meta["run"], meta["strategy"], meta["clients"], meta["groups"], meta["history"])
