"""Server strategies (FedAvg, FedProx, FedAdam), built by name from :data:`dsfed.federated.registry.STRATEGIES`."""

from __future__ import annotations

import inspect
from typing import Any

from dsfed.errors import DsfedError
from dsfed.federated.registry import STRATEGIES, resolve
from dsfed.federated.strategies.base import DEFAULT_GROUP, Strategy
from dsfed.federated.strategies.fedadam import FedAdam
from dsfed.federated.strategies.fedavg import FedAvg, weighted_average
from dsfed.federated.strategies.fedprox import PROX_MU, FedProx, proximal_term

__all__ = ["DEFAULT_GROUP", "PROX_MU", "STRATEGIES", "FedAdam", "FedAvg", "FedProx", "Strategy", "build_strategy", "proximal_term",
           "weighted_average"]


def build_strategy(name: str, **kwargs: Any) -> Strategy:
    """Build the strategy registered as ``name`` with its keyword options (e.g. ``mu`` for fedprox)."""
    builder = resolve(STRATEGIES, name, "federated strategy")
    accepted = [p for p in inspect.signature(builder).parameters if p != "self"]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise DsfedError(f"strategy {name!r} does not take {', '.join(unknown)} (takes: {', '.join(accepted) or 'nothing'})")
    try:
        return builder(**kwargs)  # type: ignore[no-any-return]
    except (TypeError, ValueError) as exc:
        raise DsfedError(f"strategy {name!r}: {exc}") from None
