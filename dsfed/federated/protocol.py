"""What a federated client is: the ``ClientAlgo`` protocol (MONAI-FL-like) and what one local fit returns."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch

if TYPE_CHECKING:
    from dsfed.config import MethodConfig, Params

__all__ = ["ClientAlgo", "ClientInfo", "ClientSetup", "FitResult", "Weights"]

Weights = dict[str, torch.Tensor]
"""A (partial) state dict: parameter / buffer name -> tensor."""


@dataclass
class FitResult:
    """What a client returns after local training.

    Attributes:
        weights: its new weights, the non-local (shared) keys only.
        num_samples: training samples it used; FedAvg weights its update by this.
        metrics: training metrics (e.g. ``{"loss": 0.31}``), averaged by the rounds loop weighted by
            ``num_samples``.
    """

    weights: Weights
    num_samples: int
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class ClientInfo:
    """What a client tells the server about its data: sample counts per split and the data's fingerprint.

    Attributes:
        samples: split name (``train``, ``val``, ``test``) -> number of samples.
        fingerprint: a hash of the client's data (its store's fingerprint); None when it has none.
    """

    samples: dict[str, int]
    fingerprint: str | None = None


@runtime_checkable
class ClientAlgo(Protocol):
    """One federated client, as the rounds loop sees it (MONAI-FL's ``ClientAlgo``, trimmed).

    Everything the loop sends or receives is a :data:`Weights` of the shared keys; local keys
    (FedBN-style, see :class:`dsfed.federated.local_keys.LocalKeys`), data and optimiser state stay
    inside the client. Clients are called positionally, so implementations may name parameters freely.
    An engine reaches a client through a :class:`~dsfed.federated.engines.host.ClientHost`, which saves
    :meth:`state_dict` after every round the client trains and restores it on resume.
    Raise :class:`~dsfed.federated.engines.base.ClientFailure` (or let an ``OSError`` through) for a
    condition of the client's site; any other exception is treated as a bug and stops the run.
    """

    name: str

    def describe(self) -> ClientInfo:
        """Sample counts per split and the data fingerprint (what a query reply carries)."""
        ...

    def train(self, weights: Weights, round: int, config: dict[str, Any]) -> FitResult:
        """Load the global ``weights`` (all non-local keys), train locally, return the new non-local weights.

        ``config`` is the strategy's ``configure_fit(round)`` (e.g. ``{"prox_mu": 0.01}`` for FedProx).
        """
        ...

    def evaluate(self, weights: Weights, split: str) -> dict[str, float]:
        """Metrics of ``weights`` (merged with the client's local keys) on its ``split`` ('val', 'test')."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Client-side state to checkpoint: local keys, optimiser state, RNG generators.

        Must load with ``torch.load(weights_only=True)``: tensors, numbers, strings, and lists, tuples
        and dicts of them (optimiser state dicts qualify); no arbitrary objects.
        """
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        ...


@dataclass(frozen=True)
class ClientSetup:
    """What a client-algorithm builder (``dsfed.federated.registry.CLIENT_ALGORITHMS``) receives.

    Attributes:
        name: the client's name.
        stores: its client store(s) (several pool their data: the ``centralized`` baseline).
        model_factory: builds the client's model (identical initial weights on every call).
        params: the run's params (the builder reads its own settings from them).
        method: the method's spec (``federated.methods.<name>``).
        device: where the client computes.
    """

    name: str
    stores: Sequence[Path]
    model_factory: Callable[[], Any]
    params: Params
    method: MethodConfig
    device: torch.device
