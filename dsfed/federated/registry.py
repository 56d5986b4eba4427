"""The federated registries (name -> ``module:attribute`` of the builder): strategies, client algorithms, engines.

They are the single source of these names: config validation reads them without importing torch, and
each builder is imported only when a run asks for it. To add one, write the class or function and add a
line here (docs/DESIGN.md, "Extension points").
"""

from __future__ import annotations

import importlib
from typing import Any

from dsfed.errors import DsfedError

__all__ = ["CENTRALIZED", "CLIENT_ALGORITHMS", "ENGINES", "STRATEGIES", "resolve"]

STRATEGIES: dict[str, str] = {
    "fedavg": "dsfed.federated.strategies.fedavg:FedAvg",
    "fedprox": "dsfed.federated.strategies.fedprox:FedProx",
    "fedadam": "dsfed.federated.strategies.fedadam:FedAdam",
}
"""Server aggregation rules (:class:`~dsfed.federated.strategies.base.Strategy`)."""

CENTRALIZED = "centralized"
"""Not a strategy but a method kind: every training client's data pooled into one client (the FL ceiling)."""

CLIENT_ALGORITHMS: dict[str, str] = {
    "segmentation": "dsfed.federated.clients:build_segmentation_client",
}
"""What a client does with its data each round: ``builder(ClientSetup) -> ClientAlgo``."""

ENGINES: dict[str, str] = {
    "inprocess": "dsfed.federated.engines.inprocess:InProcessEngine",
}
"""How the server reaches its clients (:class:`~dsfed.federated.engines.base.Engine`)."""


def resolve(registry: dict[str, str], name: str, kind: str) -> Any:
    """The object registered as ``name`` (imported now); one clear line when there is none."""
    try:
        target = registry[name]
    except KeyError:
        raise DsfedError(f"unknown {kind} {name!r} (known: {', '.join(sorted(registry))})") from None
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)
