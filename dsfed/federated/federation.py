"""The server's view of its clients: an engine, the run's identity and the payload ledger.

Every exchange with a client goes through :class:`Federation`, which serialises weights to safetensors
bytes, records each payload's exact size in the ledger (training, validation and test alike) and turns
a client's error reply into a skipped client, or its fatal reply (a bug on the client side) into an error.
The server learns sample counts, data fingerprints and client state only from replies.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from dsfed.federated.codec import PLAIN, Codec, decode, encode
from dsfed.federated.engines.base import (
    DeliverReply,
    DeliverTask,
    Engine,
    EvaluateReply,
    EvaluateTask,
    FitReply,
    FitTask,
    QueryReply,
    Reply,
)
from dsfed.federated.errors import FederatedError
from dsfed.federated.ledger import Ledger
from dsfed.federated.protocol import Weights
from dsfed.federated.serialize import from_bytes, to_bytes

if TYPE_CHECKING:
    from dsfed.federated.settings import CodecConfig, SecAggConfig

__all__ = ["Federation"]

log = logging.getLogger(__name__)


def _raise_fatal(replies: Mapping[str, Reply], what: str) -> None:
    for name, reply in replies.items():
        if reply.fatal:
            raise FederatedError(f"client {name}: {what} stopped the run: {reply.error}")


class Federation:
    """Server-side gateway to the clients of one run.

    Args:
        engine: how clients are reached.
        run: the run's identity (its config hash); clients key their state by it.
        ledger: every payload's size goes here; None records nothing (pooled training, where nothing travels).
        secure: SecAgg+ for every fit (the engine must offer ``secure_fit``: Flower's); None: plain fits.
        codec: how weights travel (``federated.codec``): downloads in ``codec.down``, updates in ``codec.up``
            (as deltas with ``codec.delta``), compressed or not; None: float32 safetensors both ways.
    """

    def __init__(self, engine: Engine, run: str, ledger: Ledger | None = None, secure: SecAggConfig | None = None,
                 codec: CodecConfig | None = None) -> None:
        self.engine = engine
        self.run = run
        self.ledger = ledger
        self.secure = secure
        self.down: Codec = PLAIN
        self.up: Codec | None = None   # None: the clients reply in plain bytes
        if codec is not None and not codec.plain:
            self.down = Codec(codec.down, False, codec.compress, codec.level)
            self.up = Codec(codec.up, codec.delta, codec.compress, codec.level)
        self._max_weight: float | None = None

    def _record(self, round: int, client: str, direction: str, what: str, nbytes: int) -> None:
        if self.ledger is not None:
            self.ledger.record(round, client, direction, what, nbytes)

    def query(self, clients: Sequence[str] | None = None, with_state: bool = True) -> dict[str, QueryReply]:
        """Ask ``clients`` (default: all) for sample counts, fingerprints and, with ``with_state``, the state they hold."""
        names = list(clients) if clients is not None else self.engine.clients
        replies = self.engine.query(names, self.run if with_state else None)
        _raise_fatal(replies, "a query")
        return replies

    def _record_sent(self, round: int, replies: Mapping[str, Reply], downloads: Mapping[str, tuple[str, int]]) -> None:
        """A ``down`` row (what, bytes) per client in ``downloads`` that the engine reached (``Reply.sent``); in
        the order of ``downloads``. A client whose node was not connected was sent nothing and gets no row."""
        for name, (what, nbytes) in downloads.items():
            reply = replies.get(name)
            if reply is None or reply.sent:
                self._record(round, name, "down", what, nbytes)

    def fit(
        self, round: int, weights: Mapping[str, Weights], configs: Mapping[str, Mapping[str, Any]], *, committed: int,
        keep: Iterable[int] = (), local_keys: Sequence[str] = (),
    ) -> dict[str, FitReply]:
        """Send each client its weights (``weights[client]``) and config; return the replies (errors included).

        Ledger: ``down``/``global_weights`` for every client reached, ``up``/``update`` for every update received,
        each with its encoded size. A reply's payload is in the federation's codec: read it with
        :meth:`decode_update`. With ``secure``, see :meth:`_fit_secure`.
        """
        if self.secure is not None:
            return self._fit_secure(round, weights, configs, committed=committed, keep=keep, local_keys=local_keys)
        payloads: dict[int, bytes] = {}  # one serialisation per distinct weights object
        tasks: dict[str, FitTask] = {}
        for name, own in weights.items():
            if id(own) not in payloads:
                payloads[id(own)] = encode(own, self.down, reply=self.up)
            payload = payloads[id(own)]
            tasks[name] = FitTask(self.run, round, payload, dict(configs.get(name, {})), committed, tuple(sorted(set(keep))), tuple(local_keys))
        replies = self.engine.fit(tasks)
        self._record_sent(round, replies, {name: ("global_weights", len(task.payload)) for name, task in tasks.items()})
        _raise_fatal(replies, f"round {round}")
        for name, reply in replies.items():
            if reply.ok:
                self._record(round, name, "up", "update", len(reply.payload))
        return replies

    def decode_update(self, payload: bytes, sent: Weights) -> Weights:
        """A fit reply's weights: ``payload`` decoded, its deltas (codec ``delta``) added to ``sent``, the float32
        weights the server sent that client (not their rounded download: the rounding does not stay)."""
        return decode(payload, reference=sent if self.up is not None and self.up.delta else None)

    def _fit_secure(
        self, round: int, weights: Mapping[str, Weights], configs: Mapping[str, Mapping[str, Any]], *, committed: int,
        keep: Iterable[int], local_keys: Sequence[str],
    ) -> dict[str, FitReply]:
        """A fit whose updates the server sees only as their weighted mean (SecAgg+, :mod:`dsfed.federated.secure`).

        Every client must start from the same weights. Each ok reply carries the weights the strategy would
        have got from a FedAvg of the round: the global weights plus the mean update, with the client's own
        integer buffers. Ledger: one row per protocol message (``secagg_*``, ``global_weights``, ``masked_update``)
        with its size as Flower serialises it.
        """
        from dsfed.federated.secure import rebuild

        assert self.secure is not None
        secure_fit = getattr(self.engine, "secure_fit", None)
        if secure_fit is None:
            raise FederatedError(f"secagg needs federated.engine flower or simulation; the {self.engine.name} engine has no secure aggregation")
        if len({id(w) for w in weights.values()}) > 1:
            raise FederatedError(f"round {round}: secagg needs every client to start from the same global weights (one weight group)")
        if not weights:
            return {}
        start = next(iter(weights.values()))
        payload = to_bytes(start)
        tasks = {name: FitTask(self.run, round, payload, dict(configs.get(name, {})), committed, tuple(sorted(set(keep))), tuple(local_keys))
                 for name in weights}
        result = secure_fit(tasks, self.secure, self._weight_bound(), round)
        for client, direction, what, nbytes in result.traffic:
            self._record(round, client, direction, what, nbytes)
        _raise_fatal(result.replies, f"round {round}")
        out: dict[str, FitReply] = {}
        for name, reply in result.replies.items():
            if reply.ok and result.mean is not None:
                merged = rebuild(start, result.layout, result.mean, from_bytes(reply.payload))
                out[name] = FitReply(name, payload=to_bytes(merged), num_samples=reply.num_samples, metrics=reply.metrics)
            else:
                out[name] = reply if not reply.ok else FitReply(name, error="SecAgg+ returned no sum")
        return out

    def _weight_bound(self) -> float:
        """SecAgg+'s ``max_weight``: the most training samples any client holds (asked once per run)."""
        if self._max_weight is None:
            replies = self.query(with_state=False)
            counts = [r.samples.get("train", 0) for r in replies.values() if r.ok and r.trainable]
            self._max_weight = float(max(counts, default=0) or 1)
        return self._max_weight

    def deliver(self, round: int, what: str, payload: bytes, clients: Sequence[str]) -> dict[str, DeliverReply]:
        """Send ``payload`` as ``what`` to each of ``clients`` that does not hold it yet (by sha256, from a query).

        Ledger (under ``round``): ``down``/``what`` per client actually sent it and ``up``/``<what>_receipt``
        (the reply's metrics as JSON) per client that took it. A client that already holds it (a resumed run)
        is skipped and gets no row. Returns the replies of the clients sent it.
        """
        digest = hashlib.sha256(payload).hexdigest()
        held = self.query(clients, with_state=False)
        targets = [n for n in clients if not (held[n].ok and held[n].holds.get(what) == digest)]
        if not targets:
            return {}
        replies = self.engine.deliver({name: DeliverTask(self.run, what, payload, digest) for name in targets})
        self._record_sent(round, replies, {name: (what, len(payload)) for name in targets})
        _raise_fatal(replies, f"the delivery of {what}")
        for name, reply in replies.items():
            if reply.ok:
                self._record(round, name, "up", f"{what}_receipt", len(json.dumps(reply.metrics).encode()))
            else:
                log.warning("client %s could not take %s: %s", name, what, reply.error)
        return replies

    def evaluate(
        self, round: int, weights: Weights, split: str, clients: Sequence[str], state_round: int | None = None, model: str = ""
    ) -> dict[str, EvaluateReply]:
        """Every client in ``clients`` scores ``weights`` on its ``split``; numbers come back, nothing else.

        Each client pairs the weights with its own state as of ``state_round`` (default: ``round``), so a
        client restarted after a crash evaluates as it would have without the crash. ``model`` names which of
        the clients' models the weights are for, when they hold several (empty: their only one).
        Ledger (under ``round``): ``down``/``<split>_weights`` per client reached and ``up``/``<split>_metrics`` per reply.
        """
        if not clients:
            return {}
        payload = encode(weights, self.down)
        at = round if state_round is None else state_round
        tasks = {name: EvaluateTask(self.run, payload, split, at, model) for name in clients}
        replies = self.engine.evaluate(tasks)
        self._record_sent(round, replies, {name: (f"{split}_weights", len(payload)) for name in clients})
        _raise_fatal(replies, f"evaluation on {split}")
        for name, reply in replies.items():
            if reply.ok:
                self._record(round, name, "up", f"{split}_metrics", len(json.dumps(reply.metrics).encode()))
            else:
                log.warning("client %s could not evaluate on %s: %s", name, split, reply.error)
        return replies
