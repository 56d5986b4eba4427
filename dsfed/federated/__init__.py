"""Engine-agnostic federated core: client protocol, engines, strategies, local keys, payload ledger, rounds loop.

The names below load on first use (PEP 562), so ``dsfed.federated.registry`` (which config validation
reads) imports without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dsfed.federated.engines import ClientFailure, Engine, InProcessEngine
    from dsfed.federated.errors import CheckpointError, FederatedError
    from dsfed.federated.federation import Federation
    from dsfed.federated.ledger import Ledger, ledger_totals
    from dsfed.federated.local_keys import LocalKeys
    from dsfed.federated.protocol import ClientAlgo, ClientInfo, FitResult, Weights
    from dsfed.federated.rounds import FederatedResult, RoundRecord, RoundsConfig, run_rounds, sample_clients
    from dsfed.federated.serialize import from_bytes, to_bytes
    from dsfed.federated.strategies import FedAdam, FedAvg, FedProx, Strategy, build_strategy, proximal_term

_WHERE = {
    "ClientFailure": "engines", "Engine": "engines", "InProcessEngine": "engines",
    "CheckpointError": "errors", "FederatedError": "errors",
    "Federation": "federation",
    "Ledger": "ledger", "ledger_totals": "ledger",
    "LocalKeys": "local_keys",
    "ClientAlgo": "protocol", "ClientInfo": "protocol", "FitResult": "protocol", "Weights": "protocol",
    "FederatedResult": "rounds", "RoundRecord": "rounds", "RoundsConfig": "rounds", "run_rounds": "rounds", "sample_clients": "rounds",
    "from_bytes": "serialize", "to_bytes": "serialize",
    "FedAdam": "strategies", "FedAvg": "strategies", "FedProx": "strategies", "Strategy": "strategies", "build_strategy": "strategies",
    "proximal_term": "strategies",
}

__all__ = [
    "CheckpointError", "ClientAlgo", "ClientFailure", "ClientInfo", "Engine", "FedAdam", "FedAvg", "FedProx", "FederatedError",
    "FederatedResult", "Federation", "FitResult", "InProcessEngine", "Ledger", "LocalKeys", "RoundRecord", "RoundsConfig", "Strategy",
    "Weights", "build_strategy", "from_bytes", "ledger_totals", "proximal_term", "run_rounds", "sample_clients", "to_bytes",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"dsfed.federated.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'dsfed.federated' has no attribute {name!r}")
