"""The Flower transport: wire messages to SuperNodes through a ServerApp's ``Grid``, replies back.

Each SuperNode is started with ``--node-config 'client="<name>"'``; the transport learns which Flower node
is which client by a ``query.hello`` message to every node it has not met (node IDs change when a node
restarts without node authentication, so unknown IDs are greeted again when they appear). A message is
pushed to every node at once and the replies are pulled until all are in or ``timeout_s`` passes; a node
that is gone (Flower's "node unavailable" reply) or late answers with one line instead.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from dsfed.federated.engines.base import NOT_CONNECTED
from dsfed.federated.engines.remote import WireMessage
from dsfed.federated.flower.messages import flower_type, from_record, to_record

if TYPE_CHECKING:
    from dsfed.federated.secure import SecureRound
    from dsfed.federated.settings import SecAggConfig

__all__ = ["GridTransport"]

log = logging.getLogger(__name__)
HELLO = "query.hello"
POLL_S = 0.2


class GridTransport:
    """:class:`~dsfed.federated.engines.remote.Transport` over a Flower ``Grid``.

    Args:
        grid: the ServerApp's grid.
        clients: the client names the run needs; :meth:`wait` waits for their nodes.
        timeout_s: how long a message waits for its replies.
    """

    def __init__(self, grid: Grid, clients: Sequence[str], timeout_s: float = 600.0) -> None:
        self.grid = grid
        self.expected = list(clients)
        self.timeout_s = float(timeout_s)
        self.node_of: dict[str, int] = {}  # client -> Flower node ID
        self._greeted: set[int] = set()

    # ---------------------------------------------------------------------------------------------
    def _refresh(self) -> None:
        """Drop nodes that left; greet the ones not met yet and learn their client names."""
        ids = set(int(i) for i in self.grid.get_node_ids())
        self.node_of = {c: n for c, n in self.node_of.items() if n in ids}
        self._greeted &= ids
        new = sorted(ids - self._greeted)
        if not new:
            return
        hellos = [Message(RecordDict({"hello": ConfigRecord({"from": "dsfed"})}), dst_node_id=n, message_type=HELLO, ttl=60.0)
                  for n in new]
        for node, reply in self._round_trip(hellos, min(self.timeout_s, 60.0)).items():
            if isinstance(reply, str):
                log.warning("flower node %d did not say who it is: %s", node, reply)
                continue
            client = str(reply.content["hello"]["client"])
            if client in self.node_of and self.node_of[client] != node:
                log.warning("client %s now answers from flower node %d (was %d): a restarted node", client, node, self.node_of[client])
            self.node_of[client] = node
            self._greeted.add(node)
            log.info("flower node %d is client %s", node, client)

    def wait(self, timeout_s: float) -> list[str]:
        """Wait up to ``timeout_s`` for a node of every expected client; returns the clients still missing."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._refresh()
            missing = [c for c in self.expected if c not in self.node_of]
            if not missing or time.monotonic() > deadline:
                return missing
            time.sleep(1.0)

    @property
    def nodes(self) -> list[str]:
        self._refresh()
        return [c for c in self.expected if c in self.node_of] + sorted(set(self.node_of) - set(self.expected))

    # ---------------------------------------------------------------------------------------------
    def _round_trip(self, messages: list[Message], timeout_s: float) -> dict[int, Message | str]:
        """Push ``messages`` (one per node), pull until every reply is in or ``timeout_s``; node -> reply or why none."""
        ids = list(self.grid.push_messages(messages))
        node_of_id = {mid: int(m.metadata.dst_node_id) for mid, m in zip(ids, messages, strict=True)}
        out: dict[int, Message | str] = {}
        pending = set(ids)
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            for reply in self.grid.pull_messages(list(pending)):
                mid = reply.metadata.reply_to_message_id
                if mid not in pending:
                    continue
                pending.discard(mid)
                node = node_of_id[mid]
                if reply.has_error():
                    reason = (reply.error.reason or "").strip().splitlines()
                    out[node] = f"flower error {reply.error.code}" + (f": {reason[0]}" if reason else "")
                else:
                    out[node] = reply
            if pending:
                time.sleep(POLL_S)
        for mid in pending:
            out[node_of_id[mid]] = f"no reply within {timeout_s:.0f} s"
        return out

    def exchange(self, messages: Mapping[str, WireMessage]) -> dict[str, WireMessage | str]:
        out: dict[str, WireMessage | str] = {}
        flower: list[Message] = []
        client_of: dict[int, str] = {}
        for name, (kind, meta, payload) in messages.items():
            node = self.node_of.get(name)
            if node is None:
                out[name] = f"node {name} {NOT_CONNECTED}"
                continue
            client_of[node] = name
            flower.append(Message(to_record(kind, meta, payload), dst_node_id=node, message_type=flower_type(kind), ttl=self.timeout_s))
        if flower:
            for node, reply in self._round_trip(flower, self.timeout_s).items():
                name = client_of[node]
                out[name] = f"node {name}: {reply}" if isinstance(reply, str) else from_record(reply.content)
        return {name: out[name] for name in messages}

    def secure_exchange(self, messages: Mapping[str, WireMessage], cfg: SecAggConfig, max_weight: float, round: int) -> SecureRound:
        """Send fit ``messages`` as one SecAgg+ round (:func:`dsfed.federated.flower.secagg.secure_fit`)."""
        from dsfed.federated.engines.base import FitReply
        from dsfed.federated.flower.secagg import secure_fit

        here = {name: msg for name, msg in messages.items() if name in self.node_of}
        result = secure_fit(self.grid, self.node_of, here, cfg, max_weight, round, self.timeout_s)
        for name in messages:
            if name not in here:
                result.replies[name] = FitReply(name, error=f"node {name} {NOT_CONNECTED}", sent=False)
        result.replies = {name: result.replies[name] for name in messages}
        return result

    def close(self) -> None:
        """Nothing to release: the grid belongs to the ServerApp."""

