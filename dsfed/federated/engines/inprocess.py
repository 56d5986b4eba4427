"""The in-process engine: every client lives in this process and is called one after another.

Tasks and replies still cross as bytes (the payloads) and plain values, exactly as a networked engine
would carry them; each client keeps its state in its own folder under ``state_root``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from dsfed.federated.engines.base import (
    DeliverReply,
    DeliverTask,
    EvaluateReply,
    EvaluateTask,
    FitReply,
    FitTask,
    QueryReply,
)
from dsfed.federated.engines.client_state import ClientStateStore
from dsfed.federated.engines.host import ClientHost
from dsfed.federated.errors import FederatedError
from dsfed.federated.protocol import ClientAlgo
from dsfed.io import safe_name

__all__ = ["InProcessEngine"]


class InProcessEngine:
    """:class:`~dsfed.federated.engines.base.Engine` over client algorithms in this process.

    Args:
        clients: the clients, with unique names (training and held-out).
        state_root: each client keeps its per-round state in ``state_root/<client>/<run>/``; None keeps
            it in memory (no resume across processes).
        holdout: clients that are only evaluated; asking one to train is a bug and raises.

    A client's failure (see :func:`~dsfed.federated.engines.base.is_client_failure`) comes back as an error
    reply; any other exception in a client propagates to the caller with its traceback.
    """

    name = "inprocess"

    def __init__(self, clients: Sequence[ClientAlgo], state_root: str | Path | None = None, holdout: Iterable[str] = ()) -> None:
        names = [c.name for c in clients]
        if len(set(names)) != len(names):
            raise FederatedError(f"client names must be unique, got {names}")
        held = set(holdout)
        root = Path(state_root) if state_root is not None else None
        self.hosts = {
            c.name: ClientHost(c, ClientStateStore(root / safe_name(c.name) if root is not None else None), trainable=c.name not in held)
            for c in clients
        }

    @property
    def clients(self) -> list[str]:
        return list(self.hosts)

    def _host(self, name: str) -> ClientHost:
        try:
            return self.hosts[name]
        except KeyError:
            raise FederatedError(f"no client named {name!r} in this engine (have: {', '.join(self.hosts)})") from None

    def query(self, clients: Sequence[str], run: str | None) -> dict[str, QueryReply]:
        return {name: self._host(name).query(run) for name in clients}

    def fit(self, tasks: Mapping[str, FitTask]) -> dict[str, FitReply]:
        return {name: self._host(name).fit(task) for name, task in tasks.items()}

    def evaluate(self, tasks: Mapping[str, EvaluateTask]) -> dict[str, EvaluateReply]:
        return {name: self._host(name).evaluate(task) for name, task in tasks.items()}

    def deliver(self, tasks: Mapping[str, DeliverTask]) -> dict[str, DeliverReply]:
        return {name: self._host(name).deliver(task) for name, task in tasks.items()}

    def close(self) -> None:
        """Nothing to release: the clients are objects of this process."""
