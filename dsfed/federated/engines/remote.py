"""An engine whose clients are nodes reached through a transport (Flower, or a loopback for tests).

:class:`RemoteEngine` implements :class:`~dsfed.federated.engines.base.Engine` by encoding each task
(:mod:`~dsfed.federated.engines.wire`), handing the batch to a :class:`Transport`, and decoding the replies.
A node that does not answer (gone, timed out) gets an error reply, so the rounds loop goes on without it
when ``min_clients`` still holds. Before any task, every node is sent the run's setup.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from dsfed.federated.engines.base import (
    NOT_CONNECTED,
    DeliverReply,
    DeliverTask,
    EvaluateReply,
    EvaluateTask,
    FitReply,
    FitTask,
    QueryReply,
    Reply,
)
from dsfed.federated.engines.node import Node
from dsfed.federated.engines.wire import Message, QueryTask, SetupTask, decode, encode
from dsfed.federated.errors import FederatedError

if TYPE_CHECKING:
    from dsfed.federated.secure import SecureRound
    from dsfed.federated.settings import SecAggConfig

__all__ = ["LoopbackTransport", "RemoteEngine", "Transport", "WireMessage", "setup_task"]

log = logging.getLogger(__name__)

WireMessage = tuple[str, dict[str, Any], bytes]
"""(kind, meta, payload): what a transport carries each way."""

R = TypeVar("R", bound=Reply)


class Transport(Protocol):
    """Moves wire messages to named nodes and their replies back."""

    @property
    def nodes(self) -> list[str]:
        """The client names of the nodes connected now, in a stable order."""
        ...

    def exchange(self, messages: Mapping[str, WireMessage]) -> dict[str, WireMessage | str]:
        """Send each node its message; a reply per node, or one line saying why none came."""
        ...

    def close(self) -> None:
        ...


def setup_task(kind: str, settings: dict[str, Any]) -> SetupTask:
    """A setup whose key is the hash of what it sets up (a node rebuilds only when it changes)."""
    key = hashlib.sha256(json.dumps({"kind": kind, "settings": settings}, sort_keys=True).encode()).hexdigest()[:16]
    return SetupTask(kind, key, settings)


class RemoteEngine:
    """:class:`~dsfed.federated.engines.base.Engine` over nodes behind a :class:`Transport`.

    Args:
        transport: reaches the nodes.
        setup: what every node builds before its first task.
        clients: the clients this run needs (training and held-out); a missing node is an error reply.
        holdout: clients that are only evaluated; asking one to train is a bug and raises.
        name: the engine's name (``flower``, ``loopback``).
    """

    def __init__(self, transport: Transport, setup: SetupTask, clients: Sequence[str], holdout: Sequence[str] = (),
                 name: str = "remote") -> None:
        self.transport = transport
        self.name = name
        self._clients = list(clients)
        self._holdout = set(holdout)
        self._setup = setup
        self._ready: set[str] = set()

    @property
    def clients(self) -> list[str]:
        return list(self._clients)

    def _set_up(self, names: Sequence[str], reply_type: type[R]) -> dict[str, R]:
        """Set up the nodes of ``names`` not set up yet; an error reply for each that could not be."""
        unknown = [n for n in names if n not in self._clients]
        if unknown:
            raise FederatedError(f"no client named {unknown[0]!r} in this engine (have: {', '.join(self._clients)})")
        failed: dict[str, R] = {}
        new = [n for n in names if n not in self._ready]
        if new:
            for name, reply in self._exchange({n: self._setup for n in new}, QueryReply).items():
                if reply.ok:
                    self._ready.add(name)
                else:
                    failed[name] = reply_type(name, error=f"setup failed: {reply.error}", fatal=reply.fatal, sent=False)
        return failed

    def _send(self, tasks: Mapping[str, Message], reply_type: type[R]) -> dict[str, R]:
        """Set up the nodes not set up yet, then send ``tasks``; every asked client gets a reply."""
        replies: dict[str, R] = self._set_up(list(tasks), reply_type)
        todo = {n: t for n, t in tasks.items() if n not in replies}
        replies.update(self._exchange(todo, reply_type))
        return {n: replies[n] for n in tasks}

    def _exchange(self, tasks: Mapping[str, Message], reply_type: type[R]) -> dict[str, R]:
        if not tasks:
            return {}
        connected = set(self.transport.nodes)
        out: dict[str, R] = {}
        wire = {}
        for name, task in tasks.items():
            if name in connected:
                wire[name] = encode(task)
            else:
                out[name] = reply_type(name, error=f"node {name} {NOT_CONNECTED}", sent=False)
        for name, answer in self.transport.exchange(wire).items():
            if isinstance(answer, str):
                self._ready.discard(name)  # a node that comes back may have restarted: set it up again
                out[name] = reply_type(name, error=answer, sent=not answer.endswith(NOT_CONNECTED))
                continue
            reply = decode(*answer)
            if not isinstance(reply, reply_type):
                raise FederatedError(f"node {name} answered a {type(reply).__name__}, expected a {reply_type.__name__}")
            out[name] = reply
        return out

    def query(self, clients: Sequence[str], run: str | None) -> dict[str, QueryReply]:
        replies = self._send({n: QueryTask(run) for n in clients}, QueryReply)
        for name in clients:
            if replies[name].ok:
                replies[name].trainable = replies[name].trainable and name not in self._holdout
        return replies

    def fit(self, tasks: Mapping[str, FitTask]) -> dict[str, FitReply]:
        held = [n for n in tasks if n in self._holdout]
        if held:
            raise FederatedError(f"client {held[0]} is held out: the server must not ask it to train")
        return self._send(tasks, FitReply)

    def evaluate(self, tasks: Mapping[str, EvaluateTask]) -> dict[str, EvaluateReply]:
        return self._send(tasks, EvaluateReply)

    def deliver(self, tasks: Mapping[str, DeliverTask]) -> dict[str, DeliverReply]:
        return self._send(tasks, DeliverReply)

    def secure_fit(self, tasks: Mapping[str, FitTask], cfg: SecAggConfig, max_weight: float, round: int) -> SecureRound:
        """Local training on each named client, aggregated by the transport's SecAgg+ (Flower only)."""
        exchange = getattr(self.transport, "secure_exchange", None)
        if exchange is None:
            raise FederatedError(f"secagg: the {self.name} engine's transport has no secure aggregation (use federated.engine flower or simulation)")
        held = [n for n in tasks if n in self._holdout]
        if held:
            raise FederatedError(f"client {held[0]} is held out: the server must not ask it to train")
        failed = self._set_up(list(tasks), FitReply)
        connected = set(self.transport.nodes)
        for name in tasks:
            if name not in failed and name not in connected:
                failed[name] = FitReply(name, error=f"node {name} {NOT_CONNECTED}", sent=False)
        result: SecureRound = exchange({n: encode(t) for n, t in tasks.items() if n not in failed}, cfg, max_weight, round)
        for name, reply in result.replies.items():
            if not reply.ok and ("not connected" in str(reply.error) or "no reply" in str(reply.error)):
                self._ready.discard(name)  # a node that comes back may have restarted: set it up again
        result.replies = {n: failed[n] if n in failed else result.replies[n] for n in tasks}
        return result

    def close(self) -> None:
        self.transport.close()


class LoopbackTransport:
    """Nodes in this process behind the wire codec: every message is encoded, handed over, decoded.

    What tests use to check that a remote engine gives what the in-process one gives, without a network.
    ``down`` names nodes that answer nothing (a node that is gone). ``fresh``: every message meets a new
    :class:`Node` built from the same config, as on a Flower SuperNode (one ClientApp process per message).
    """

    def __init__(self, nodes: Sequence[Node], fresh: bool = False) -> None:
        self._nodes = {n.config.client: n for n in nodes}
        self.down: set[str] = set()
        self.fresh = fresh

    @property
    def nodes(self) -> list[str]:
        return [n for n in self._nodes if n not in self.down]

    def exchange(self, messages: Mapping[str, WireMessage]) -> dict[str, WireMessage | str]:
        out: dict[str, WireMessage | str] = {}
        for name, (kind, meta, payload) in messages.items():
            if name in self.down:
                out[name] = f"node {name} did not answer"
                continue
            meta = json.loads(json.dumps(meta))  # what a wire does to it
            node = Node(self._nodes[name].config) if self.fresh else self._nodes[name]
            out[name] = node.answer(kind, meta, payload)
        return out

    def close(self) -> None:
        """Nothing to release."""
