"""A client's own state store: its ``state_dict()`` after each round it trained, keyed by run and round.

The client keeps this itself (on a hospital's disk, or in a folder the in-process engine gives it); the
server's checkpoint never holds it. Files load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import copy
import logging
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from dsfed.federated.errors import CheckpointError
from dsfed.io import atomic_path, safe_name

__all__ = ["ClientStateStore"]

log = logging.getLogger(__name__)
_FILE = re.compile(r"^round-(\d+)\.pt$")


class ClientStateStore:
    """``root/<run>/round-NNNN.pt`` files (or a dict in memory when ``root`` is None).

    A client holds state for one run at a time: saving under a new run removes the others.
    """

    def __init__(self, root: str | Path | None) -> None:
        self.root = Path(root) if root is not None else None
        self._memory: dict[str, dict[int, dict[str, Any]]] = {}

    def _dir(self, run: str) -> Path:
        assert self.root is not None
        return self.root / safe_name(run)

    def rounds(self, run: str) -> list[int]:
        """Rounds of ``run`` with a saved state, oldest first."""
        if self.root is None:
            return sorted(self._memory.get(run, {}))
        folder = self._dir(run)
        if not folder.is_dir():
            return []
        return sorted(int(m.group(1)) for p in folder.iterdir() if (m := _FILE.match(p.name)))

    def save(self, run: str, round: int, state: dict[str, Any]) -> None:
        """Write the state after ``round`` atomically (replacing one of the same round); forget other runs."""
        if self.root is None:
            self._memory = {run: {**self._memory.get(run, {}), round: copy.deepcopy(state)}}
            return
        folder = self._dir(run)
        if self.root.is_dir():
            for other in self.root.iterdir():
                if other.is_dir() and other != folder:
                    log.info("removing client state of another run %s", other)
                    shutil.rmtree(other, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob(".round-*"):  # temporaries of a killed writer
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
        with atomic_path(folder / f"round-{round:04d}.pt", overwrite=True) as tmp:
            torch.save(state, tmp)

    def load(self, run: str, round: int) -> dict[str, Any]:
        """The state saved after ``round``."""
        if self.root is None:
            return copy.deepcopy(self._memory[run][round])
        path = self._dir(run) / f"round-{round:04d}.pt"
        try:
            return torch.load(path, map_location="cpu", weights_only=True)  # type: ignore[no-any-return]
        except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user-facing problem
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise CheckpointError(f"{path}: cannot load client state ({first}); delete {self._dir(run)} to start over") from exc

    def latest_at(self, run: str, round: int) -> int | None:
        """The newest saved round at or before ``round`` (None: the client had not trained by then)."""
        earlier = [r for r in self.rounds(run) if r <= round]
        return earlier[-1] if earlier else None

    def forget(self, run: str, keep: set[int]) -> None:
        """Remove every state of ``run`` whose round is not in ``keep``."""
        for rnd in self.rounds(run):
            if rnd in keep:
                continue
            if self.root is None:
                del self._memory[run][rnd]
            else:
                (self._dir(run) / f"round-{rnd:04d}.pt").unlink(missing_ok=True)
