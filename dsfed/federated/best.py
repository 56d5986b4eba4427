"""The best global weights of a run so far, kept beside its round checkpoints (so a resumed run keeps them)."""

from __future__ import annotations

from pathlib import Path

from safetensors import safe_open

from dsfed.federated.protocol import Weights
from dsfed.io import atomic_path, write_safetensors

__all__ = ["BestWeights"]


class BestWeights:
    """The best weights so far by one validation score, in a safetensors file whose metadata records the round.

    Args:
        path: the file (inside the run's checkpoint folder).
        metric: the metadata key the score is stored under (e.g. ``val_dice``); higher is better.

    Ties keep the earlier round.
    """

    def __init__(self, path: Path, metric: str = "val_dice") -> None:
        self.path = path
        self.metric = metric

    def _metadata(self) -> dict[str, str]:
        with safe_open(str(self.path), framework="pt") as fh:
            return dict(fh.metadata())

    def score(self) -> float:
        """The best score so far (-inf before any)."""
        return float(self._metadata()[self.metric]) if self.path.exists() else float("-inf")

    def offer(self, round: int, score: float, weights: Weights, force: bool = False) -> bool:
        """Keep ``weights`` if ``score`` beats the best so far (or ``force``); returns whether they were kept."""
        if not (force or score > self.score()):
            return False
        with atomic_path(self.path, overwrite=True) as tmp:
            meta = {"round": str(round), self.metric: repr(float(score))}
            write_safetensors(dict(weights), str(tmp), metadata=meta)
        return True

    def round(self) -> int:
        """The round of the best weights so far (0 before any)."""
        return int(self._metadata()["round"]) if self.path.exists() else 0

    def load(self) -> tuple[int, Weights]:
        """(round, weights) of the best so far."""
        with safe_open(str(self.path), framework="pt") as fh:
            return int(fh.metadata()["round"]), {k: fh.get_tensor(k) for k in fh.keys()}
