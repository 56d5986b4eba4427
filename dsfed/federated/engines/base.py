"""The engine seam: what the server sends a client, what a client replies, and the ``Engine`` protocol.

An engine moves tasks to named clients and brings their replies back: in this process
(:class:`~dsfed.federated.engines.inprocess.InProcessEngine`) or, later, across a network. Weights travel
as safetensors bytes (``payload``) so that the server-side :class:`~dsfed.federated.federation.Federation`
can put every transfer in the ledger; everything else in a reply is numbers and short strings.

A client that fails (its disk, its memory, its data) answers with ``error`` set and the round goes on
without it. A bug in our code (a ``TypeError`` in a client algorithm, say) is not a failed client: the
in-process engine lets it propagate, and a remote engine answers with ``fatal`` set so the server stops.
"""

from __future__ import annotations

import errno
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

from dsfed.errors import DsfedError, TrainingDiverged

__all__ = [
    "ClientFailure",
    "DeliverReply",
    "DeliverTask",
    "Engine",
    "EvaluateReply",
    "EvaluateTask",
    "FitReply",
    "FitTask",
    "NOT_CONNECTED",
    "QueryReply",
    "Reply",
    "is_client_failure",
]


class ClientFailure(DsfedError):
    """Raised by a client algorithm for a condition of its own site (bad or missing data, a full disk...).

    The engine turns it into an error reply and the rounds loop leaves the client out of the round.
    """


def is_client_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is the client's environment failing (reply with an error) rather than a bug (propagate).

    Failures: :class:`ClientFailure` and any other :class:`~dsfed.errors.DsfedError` (data and
    configuration errors, one line each), ``OSError`` (disk full, store unreadable, a lost connection),
    ``MemoryError`` and ``torch.OutOfMemoryError``. Everything else (``TypeError``, ``KeyError``,
    ``RuntimeError`` of a shape mismatch...) is a bug in the code and must stop the run, as must a
    :class:`~dsfed.errors.TrainingDiverged` (a non-finite loss: the settings, not the site).
    """
    if isinstance(exc, TrainingDiverged):
        return False  # not the site's environment: the settings diverge, which stops the run
    if isinstance(exc, OSError) and exc.errno == errno.ENOENT and not exc.filename:
        return False  # a bare FileNotFoundError without a path is more likely our bug than the site's disk
    return isinstance(exc, DsfedError | OSError | MemoryError | torch.OutOfMemoryError)


# --------------------------------------------------------------------------------------------------
# Tasks (server -> client)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FitTask:
    """Train locally from ``payload`` for ``round``.

    Attributes:
        run: the run's identity (its config hash): the key of the state the client keeps for it.
        round: 1-based round number.
        payload: safetensors bytes of the weights to start from (the shared keys).
        config: the strategy's per-client settings (e.g. ``{"prox_mu": 0.01}``).
        committed: the last round the server has checkpointed. The client trains from its state as of
            that round (restoring it from disk when it holds a newer or no state in memory) and may
            forget older states, except those of ``keep``.
        keep: earlier rounds whose state the client must keep (the server's best round so far, whose
            local keys a later evaluation will need).
        local_keys: regexes of keys that never leave the client (FedBN-style); stripped before sending.
    """

    run: str
    round: int
    payload: bytes
    config: Mapping[str, Any] = field(default_factory=dict)
    committed: int = 0
    keep: tuple[int, ...] = ()
    local_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class EvaluateTask:
    """Score ``payload`` on the client's ``split``.

    Attributes:
        run: the run's identity.
        payload: safetensors bytes of the (shared) weights.
        split: ``val`` or ``test``.
        state_round: pair the weights with the client's local state as of this round (FedBN-style local
            keys); ``None``: as the client holds it now.
        model: which of the client's models the weights are for, when its algorithm holds several
            (:class:`~dsfed.federated.validator.ValidationClient`); empty: its only one.
    """

    run: str
    payload: bytes
    split: str
    state_round: int | None = None
    model: str = ""


@dataclass(frozen=True)
class DeliverTask:
    """Hand the client a named payload once (SAM-Fed's teacher, a public set): ``receive(what, payload)``.

    Attributes:
        run: the run's identity.
        what: the payload's name (e.g. ``teacher``); the client algorithm decides what it means.
        payload: the bytes (safetensors for weights).
        digest: the payload's sha256; a client that already holds it (``QueryReply.holds``) is not sent it again.
    """

    run: str
    what: str
    payload: bytes
    digest: str


# --------------------------------------------------------------------------------------------------
# Replies (client -> server)
# --------------------------------------------------------------------------------------------------

NOT_CONNECTED = "is not connected"
"""How a reply's error ends when the engine had no connection to the client's node (nothing was sent)."""


@dataclass
class Reply:
    """What every reply carries besides its content.

    Attributes:
        client: who answers.
        error: one line when the client failed (then the rest of the reply is empty).
        fatal: the failure is a bug in the client-side code: the server must stop, not drop the client.
        sent: False when the task never reached the client (its node is not connected, or setting it up
            failed): nothing went down, so the ledger has no row for it. Set by the server's engine; not
            carried over the wire.
    """

    client: str
    error: str | None = None
    fatal: bool = False
    sent: bool = True

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class FitReply(Reply):
    """A local fit: the new (shared) weights as safetensors bytes, the samples it used, training metrics."""

    payload: bytes = b""
    num_samples: int = 0
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class EvaluateReply(Reply):
    """Metrics of the weights on the client's split, and how many samples that split holds."""

    metrics: dict[str, float] = field(default_factory=dict)
    num_samples: int = 0


@dataclass
class QueryReply(Reply):
    """What the server may know of a client without seeing its data.

    Attributes:
        samples: sample count per split (``train``, ``val``, ``test``).
        fingerprint: the hash of the client's data as its store records it (changes when its data do).
        trainable: whether the client may train (a held-out client is only evaluated).
        state_rounds: the rounds of ``run`` whose state the client holds on disk, oldest first.
        holds: delivered payloads the client keeps (name -> sha256), so a resumed run does not resend them.
    """

    samples: dict[str, int] = field(default_factory=dict)
    fingerprint: str | None = None
    trainable: bool = True
    state_rounds: list[int] = field(default_factory=list)
    holds: dict[str, str] = field(default_factory=dict)


@dataclass
class DeliverReply(Reply):
    """A delivery received: what the client derived from it (e.g. ``{"cached_images": 64}``)."""

    metrics: dict[str, float] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------
# The protocol
# --------------------------------------------------------------------------------------------------


@runtime_checkable
class Engine(Protocol):
    """How the rounds loop reaches clients. Every method takes tasks keyed by client name and returns the
    replies keyed the same way; a client that cannot be reached answers with ``error`` set."""

    name: str

    @property
    def clients(self) -> list[str]:
        """Every client this engine can reach, training and held-out, in a stable order."""
        ...

    def query(self, clients: Sequence[str], run: str | None) -> dict[str, QueryReply]:
        """Sample counts, data fingerprint and the state each client holds for ``run`` (None: no state asked)."""
        ...

    def fit(self, tasks: Mapping[str, FitTask]) -> dict[str, FitReply]:
        """Local training on each named client."""
        ...

    def evaluate(self, tasks: Mapping[str, EvaluateTask]) -> dict[str, EvaluateReply]:
        """Evaluation on each named client."""
        ...

    def deliver(self, tasks: Mapping[str, DeliverTask]) -> dict[str, DeliverReply]:
        """A one-off named payload to each named client."""
        ...

    def close(self) -> None:
        """Release what the engine holds (processes, connections)."""
        ...
