"""The server-side strategy interface (Flower-style): configure each round's fit, aggregate its results."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from dsfed.federated.protocol import FitResult, Weights

__all__ = ["Strategy"]


class Strategy(ABC):
    """How the server turns client updates into the next global weights.

    The rounds loop calls :meth:`initialize` once on a fresh run (or :meth:`load_state_dict` on a resumed
    one), then per round :meth:`configure_fit` and :meth:`aggregate`. All weights here are the shared
    keys only. :meth:`state_dict` is the server optimiser state that goes into every checkpoint; it must
    load with ``torch.load(weights_only=True)``.
    """

    name: str = "strategy"

    def initialize(self, global_weights: Weights) -> None:
        """Prepare server state for a run starting from ``global_weights``. Default: nothing."""

    def configure_fit(self, round: int) -> dict[str, Any]:
        """Config sent to every client trained in ``round`` (passed to ``ClientAlgo.train``). Default: ``{}``."""
        return {}

    @abstractmethod
    def aggregate(self, round: int, global_weights: Weights, results: list[tuple[str, FitResult]]) -> Weights:
        """The next global weights from the current ones and ``(client name, FitResult)`` of every client that finished."""

    def state_dict(self) -> dict[str, Any]:
        """Server state to checkpoint. Default: ``{}`` (stateless)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`. Default: nothing."""

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"
