"""Engine-agnostic federated core: client protocol, engines, strategies, local keys, payload ledger, rounds loop."""

from __future__ import annotations

from dsfed.federated.engines import ClientFailure, Engine, InProcessEngine
from dsfed.federated.errors import CheckpointError, FederatedError
from dsfed.federated.federation import Federation
from dsfed.federated.ledger import Ledger, ledger_totals
from dsfed.federated.local_keys import LocalKeys
from dsfed.federated.protocol import ClientAlgo, ClientInfo, FitResult, Weights
from dsfed.federated.rounds import FederatedResult, RoundRecord, RoundsConfig, run_rounds, sample_clients
from dsfed.federated.serialize import from_bytes, to_bytes
from dsfed.federated.strategies import STRATEGIES, FedAdam, FedAvg, FedProx, Strategy, build_strategy, proximal_term

__all__ = [
    "STRATEGIES",
    "CheckpointError",
    "ClientAlgo",
    "ClientFailure",
    "ClientInfo",
    "Engine",
    "FedAdam",
    "FedAvg",
    "FedProx",
    "FederatedError",
    "FederatedResult",
    "Federation",
    "FitResult",
    "InProcessEngine",
    "Ledger",
    "LocalKeys",
    "RoundRecord",
    "RoundsConfig",
    "Strategy",
    "Weights",
    "build_strategy",
    "from_bytes",
    "ledger_totals",
    "proximal_term",
    "run_rounds",
    "sample_clients",
    "to_bytes",
]
