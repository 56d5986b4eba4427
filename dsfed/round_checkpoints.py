"""One round checkpointer for every stage that runs in rounds (federated rounds, distillation).

A checkpoint is ``root/round-NNNN/`` written atomically (the caller writes its files into a temporary
folder; ``meta.json`` is added with the schema, the round and the run's identity), then ``root/latest``
names it, then all but the newest ``keep`` rounds are removed. A kill at any moment leaves ``latest``
pointing at a complete folder; temporaries a killed writer left are removed before the next write.

The resume policy (``docs/DESIGN.md``, "Resume"): a run resumes from ``root`` unless something that changes
its numbers changed. Its identity (``run``) hashes the settings, the input data's fingerprints and the code
its numbers depend on (:func:`dsfed.provenance.code_hash` of the packages it runs); a checkpoint of another
identity is refused with one line.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsfed.errors import DsfedError
from dsfed.io import atomic_path, write_json

__all__ = ["CheckpointError", "RoundCheckpoint", "RoundCheckpointer"]

LATEST = "latest"
META = "meta.json"
_ROUND_DIR = re.compile(r"^round-(\d+)$")
log = logging.getLogger(__name__)


class CheckpointError(DsfedError):
    """A rounds checkpoint cannot be resumed: written under another configuration, or unreadable."""


@dataclass(frozen=True)
class RoundCheckpoint:
    """A completed round on disk: its folder, round number and ``meta.json``."""

    path: Path
    round: int
    meta: dict[str, Any]


class RoundCheckpointer:
    """Per-round checkpoints of one run under ``root``.

    Args:
        root: the run's checkpoint folder.
        run: the run's identity (a hash); stored in every checkpoint and checked on resume.
        schema: the caller's file layout version; a checkpoint of another schema is refused.
        keep: completed rounds kept on disk (the newest ones).
    """

    def __init__(self, root: str | os.PathLike[str], run: str, schema: int, keep: int = 2) -> None:
        if keep < 1:
            raise DsfedError(f"keep must be >= 1, got {keep}")
        self.root, self.run, self.schema, self.keep = Path(root), run, schema, keep

    def _hint(self) -> str:
        return f"delete {self.root} to start over"

    def remove_stale_temps(self) -> None:
        """Remove temporary siblings a killed writer left (``.round-*.tmp-*``, ``.latest.tmp-*``)."""
        if not self.root.is_dir():
            return
        for path in list(self.root.glob(".round-*.tmp-*")) + list(self.root.glob(f".{LATEST}.tmp-*")):
            log.info("removing an unfinished checkpoint %s", path)
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)

    def save(self, round: int, write: Callable[[Path], None], meta: dict[str, Any] | None = None) -> Path:
        """Checkpoint ``round``: ``write(folder)`` fills a temporary folder, which becomes ``round-NNNN``."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.remove_stale_temps()
        final = self.root / f"round-{round:04d}"
        with atomic_path(final, overwrite=True) as tmp:
            tmp.mkdir(parents=True)
            write(tmp)
            write_json(tmp / META, {"schema": self.schema, "round": round, "run": self.run, **(meta or {})})
        with atomic_path(self.root / LATEST, overwrite=True) as tmp:
            tmp.write_text(final.name + "\n")
        for path in self.root.iterdir():
            match = _ROUND_DIR.match(path.name)
            if match and path.is_dir() and not round - self.keep < int(match.group(1)) <= round:
                shutil.rmtree(path, ignore_errors=True)
        return final

    def latest(self, check_run: bool = True) -> RoundCheckpoint | None:
        """The checkpoint ``latest`` names (None when there is none); refused when of another schema or run."""
        pointer = self.root / LATEST
        if not pointer.is_file():
            return None
        path = self.root / pointer.read_text().strip()
        try:
            meta = json.loads((path / META).read_text())
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{pointer}: points at {path.name}, which cannot be read ({exc}); {self._hint()}") from exc
        if meta.get("schema") != self.schema:
            raise CheckpointError(f"{path}: checkpoint schema {meta.get('schema')} (expected {self.schema}); {self._hint()}")
        if check_run and meta.get("run") != self.run:
            raise CheckpointError(
                f"{self.root}: checkpoint of round {meta.get('round')} was written under another configuration "
                f"(config hash {str(meta.get('run'))[:12] or '-'}, now {self.run[:12] or '-'}); the config changed, {self._hint()}"
            )
        return RoundCheckpoint(path, int(meta["round"]), meta)
