"""The client side of every engine: a client algorithm, its own state store, and the task handlers.

:class:`ClientHost` turns a task into a reply: it deserialises the payload, brings the client's state to
the round the server asks for (from its own disk, never from the server), calls the algorithm, saves the
state after training, and serialises what goes back. An engine only moves tasks and replies; the in-process
engine calls a host directly, a networked one would call it inside the hospital's process.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from dsfed.data.splits import stable_seed
from dsfed.federated.codec import encode, reply_codec
from dsfed.federated.engines.base import (
    DeliverReply,
    DeliverTask,
    EvaluateReply,
    EvaluateTask,
    FitReply,
    FitTask,
    QueryReply,
    is_client_failure,
)
from dsfed.federated.engines.client_state import ClientStateStore
from dsfed.federated.errors import FederatedError
from dsfed.federated.local_keys import LocalKeys
from dsfed.federated.privacy import LOCAL_DP, apply_local_dp
from dsfed.federated.protocol import ClientAlgo, FitResult
from dsfed.federated.rng import global_rngs_seeded
from dsfed.federated.serialize import from_bytes, to_bytes

__all__ = ["ClientHost", "one_line"]

log = logging.getLogger(__name__)


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message``."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


class ClientHost:
    """One client as an engine reaches it.

    Args:
        algo: the client algorithm (its data stay inside it).
        state: where the client keeps its state after every round it trains (per run and round).
        trainable: False for a held-out client: it is evaluated, never trained.
    """

    def __init__(self, algo: ClientAlgo, state: ClientStateStore, trainable: bool = True) -> None:
        self.algo = algo
        self.name = algo.name
        self.state = state
        self.trainable = trainable
        self._initial = copy.deepcopy(algo.state_dict())  # the state before any training: what "round 0" restores
        self._holds: tuple[str | None, int | None] | None = (None, None)  # (run, round) in memory; None: unknown

    # ---------------------------------------------------------------------------------------------
    def _bring_state_to(self, run: str, round: int) -> None:
        """Make the in-memory state the one the client had after ``round`` of ``run`` (its newest at or before it)."""
        wanted = self.state.latest_at(run, round)
        if self._holds is not None and self._holds[1] is None and wanted is None:
            return  # untrained, and nothing trained by then: the initial state is in memory
        if self._holds == (run, wanted):
            return
        if wanted is None:
            self.algo.load_state_dict(copy.deepcopy(self._initial))
        else:
            log.info("client %s: restoring its state of round %d (run %s)", self.name, wanted, run)
            self.algo.load_state_dict(self.state.load(run, wanted))
        self._holds = (run, wanted)

    def training_seed(self, round: int) -> int:
        """The seed of the global generators while this client trains ``round``: from the algorithm's run seed
        (its ``seed`` attribute, 0 without one), the client's name and the round; never from the process."""
        return stable_seed(int(getattr(self.algo, "seed", 0)), self.name, round, "global-rngs")

    def query(self, run: str | None) -> QueryReply:
        """Sample counts, data fingerprint and the state rounds held for ``run``."""
        try:
            info = self.algo.describe()
            rounds = self.state.rounds(run) if run else []
            holds_fn = getattr(self.algo, "holds", None)
            holds = dict(holds_fn()) if holds_fn is not None else {}
        except Exception as exc:
            if not is_client_failure(exc):
                raise
            return QueryReply(self.name, error=one_line(exc))
        return QueryReply(self.name, samples=dict(info.samples), fingerprint=info.fingerprint, trainable=self.trainable, state_rounds=rounds,
                          holds=holds)

    def deliver(self, task: DeliverTask) -> DeliverReply:
        """Hand the algorithm a named payload (its optional ``receive(what, payload, digest)``)."""
        receive = getattr(self.algo, "receive", None)
        if receive is None:
            raise FederatedError(f"client {self.name}: its algorithm takes no deliveries (asked for {task.what!r})")
        try:
            metrics = receive(task.what, task.payload, task.digest) or {}
        except Exception as exc:
            if not is_client_failure(exc):
                raise
            return DeliverReply(self.name, error=one_line(exc))
        return DeliverReply(self.name, metrics={k: float(v) for k, v in metrics.items()})

    def fit(self, task: FitTask) -> FitReply:
        """Train from the task's weights; save the state after the round; reply with the shared weights."""
        if not self.trainable:
            raise FederatedError(f"client {self.name} is held out: the server must not ask it to train")
        local = LocalKeys(task.local_keys)
        try:
            self._bring_state_to(task.run, task.committed)
            keep = {self.state.latest_at(task.run, r) for r in (task.committed, *task.keep)}
            self._holds = None  # training moves the state; a failure leaves it unknown (restored next time)
            received = from_bytes(task.payload)   # decoded once (a codec payload: decompression, half -> float32)
            reply = reply_codec(task.payload)   # the codec the server asked for (in the download's metadata)
            # the update is taken against the weights as received: a copy, as train() may change what it is given
            wants_reference = LOCAL_DP in task.config or (reply is not None and reply.delta)
            reference = {name: tensor.clone() for name, tensor in received.items()} if wants_reference else {}
            with global_rngs_seeded(self.training_seed(task.round)):  # dropout & co: the same on every engine
                result = self.algo.train(received, task.round, dict(task.config))
            if not isinstance(result, FitResult):
                raise FederatedError(f"client {self.name}: train() returned {type(result).__name__}, expected FitResult")
            shared = local.shared(result.weights)
            if LOCAL_DP in task.config:   # local DP: the update is clipped and noised before it leaves the client
                shared = apply_local_dp(task.config, self.name, task.round, shared, reference)
            # local keys never leave the client
            payload = to_bytes(shared) if reply is None else encode(shared, reply, reference=reference if reply.delta else None)
            self.state.save(task.run, task.round, self.algo.state_dict())
            self._holds = (task.run, task.round)
            self.state.forget(task.run, {r for r in keep if r is not None} | {task.round})
        except Exception as exc:
            if not is_client_failure(exc):
                raise
            return FitReply(self.name, error=one_line(exc))
        return FitReply(self.name, payload=payload, num_samples=int(result.num_samples), metrics={k: float(v) for k, v in result.metrics.items()})

    def _evaluator(self, model: str) -> Any:
        """``evaluate(weights, split)`` of the algorithm, or of its model ``model`` when it holds several."""
        if not model:
            return self.algo.evaluate
        evaluate_model = getattr(self.algo, "evaluate_model", None)
        if evaluate_model is None:
            raise FederatedError(f"client {self.name}: its algorithm holds one model (the server named {model!r})")
        return lambda weights, split: evaluate_model(model, weights, split)

    def evaluate(self, task: EvaluateTask) -> EvaluateReply:
        """Score the task's weights on one split, with the local state of ``task.state_round`` when given."""
        try:
            if task.state_round is not None:
                self._bring_state_to(task.run, task.state_round)
            samples = int(self.algo.describe().samples.get(task.split, 0))
            metrics: dict[str, Any] = self._evaluator(task.model)(from_bytes(task.payload), task.split) if samples else {}
        except Exception as exc:
            if not is_client_failure(exc):
                raise
            return EvaluateReply(self.name, error=one_line(exc))
        return EvaluateReply(self.name, metrics={k: float(v) for k, v in metrics.items()}, num_samples=samples)
