"""Engines: how the server reaches its clients (in this process today; Flower for separate machines next).

``ENGINES`` is the registry of engine names; each takes the client algorithms it serves and where their
state lives. :mod:`dsfed.federated.engines.base` holds the protocol and the task/reply messages.
"""

from __future__ import annotations

from dsfed.federated.engines.base import (
    ClientFailure,
    Engine,
    EvaluateReply,
    EvaluateTask,
    FitReply,
    FitTask,
    QueryReply,
    Reply,
    is_client_failure,
)
from dsfed.federated.engines.client_state import ClientStateStore
from dsfed.federated.engines.host import ClientHost
from dsfed.federated.engines.inprocess import InProcessEngine
from dsfed.federated.registry import ENGINES

__all__ = [
    "ENGINES",
    "ClientFailure",
    "ClientHost",
    "ClientStateStore",
    "Engine",
    "EvaluateReply",
    "EvaluateTask",
    "FitReply",
    "FitTask",
    "InProcessEngine",
    "QueryReply",
    "Reply",
    "is_client_failure",
]
