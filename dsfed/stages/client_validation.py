"""Validation at the clients: the server sends weights, each source client scores them on its own real
val split and sends back numbers only (every payload in the ledger).

The federated stages select their round this way; the server-side stages that train on synthetic data
(``distill``) use it to select on real data too, with no client image ever reaching the server.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from dsfed.config import Params
from dsfed.errors import DsfedError
from dsfed.federated.engines import Engine, InProcessEngine
from dsfed.federated.engines.remote import setup_task
from dsfed.federated.engines.wire import SetupTask
from dsfed.federated.federation import Federation
from dsfed.federated.ledger import Ledger
from dsfed.federated.protocol import Weights
from dsfed.federated.validator import ValidationClient, validation_settings
from dsfed.io import safe_name
from dsfed.models import Segmenter
from dsfed.stages.prepare import store_path

__all__ = ["ClientValidation", "Connect", "validation_scorer"]

log = logging.getLogger(__name__)


def validation_scorer(federation: Federation, clients: Sequence[str], samples: dict[str, int],
                      model: str = "") -> Callable[[int, Weights], dict[str, float]]:
    """``score(round, weights) -> {"val_dice": sample-weighted mean, "val_dice_<client>": ...}`` over ``clients``
    that hold a val split; a client that fails is left out of the mean (NaN when none answers). ``model``:
    which of the clients' models the weights are for (when they hold several)."""
    scored = [name for name in clients if samples.get(name, 0) > 0]

    def score(round: int, weights: Weights) -> dict[str, float]:
        out: dict[str, float] = {}
        total, count = 0.0, 0
        for name, reply in federation.evaluate(round, weights, "val", scored, model=model).items():
            if not reply.ok or not reply.num_samples:
                continue
            out[f"val_dice_{name}"] = reply.metrics["dice"]
            total += reply.metrics["dice"] * reply.num_samples
            count += reply.num_samples
        out["val_dice"] = total / count if count else float("nan")
        return out

    return score


Connect = Callable[[SetupTask, Sequence[str]], Engine]
"""``connect(setup, clients)``: an engine whose nodes build ``setup`` (a Flower ServerApp's RemoteEngine)."""


class ClientValidation:
    """Scores server-side models on the source clients' real val splits through an engine, and delivers the
    model every client deploys.

    Each client is a :class:`~dsfed.federated.validator.ValidationClient` holding one empty model per
    architecture (``architectures``); the weights travel as safetensors bytes and the ledger records them as
    ``val_weights`` down and ``val_metrics`` up. The engine reaches every client of the task (the held-out one
    too: it receives the deployed model, it never validates).

    Args:
        params: validated params (the clients, the seed).
        artifacts: the artifacts root (in process, the clients open their own stores there).
        clients: the clients that validate (source clients only, never the held-out one).
        ledger: where every payload is recorded.
        run: the run's identity, as the clients see it.
        device: where the clients compute (in process).
        architectures: key -> :func:`~dsfed.models.card.architecture` of each model that will be scored.
        connect: how to reach the clients; None: in this process, over the stores under ``artifacts``.
        received: in process, the folder under which each client keeps its deliveries (``<received>/<client>/``).
    """

    def __init__(self, params: Params, artifacts: str | Path, clients: Sequence[str], ledger: Ledger, run: str,
                 device: torch.device, architectures: Mapping[str, dict[str, Any]], connect: Connect | None = None,
                 received: Path | None = None) -> None:
        if params.data.holdout in clients:
            raise ValueError(f"{params.data.holdout} is the held-out client: it never validates")
        self.params, self.artifacts, self.clients = params, Path(artifacts), list(clients)
        self.ledger, self.run, self.device = ledger, run, device
        self.architectures = dict(architectures)
        self.connect, self.received = connect, received
        self._federation: Federation | None = None
        self._engine: Engine | None = None
        self._scorers: dict[str, Callable[[int, Weights], dict[str, float]]] = {}

    def _engine_federation(self) -> Federation:
        if self._federation is None:
            everyone = list(self.params.clients)
            if self.connect is not None:
                setup = setup_task("validate", validation_settings(self.params.model_dump(mode="json"), self.architectures))
                self._engine = self.connect(setup, everyone)
            else:
                classes, size = len(self.params.data.classes), self.params.data.mask_size
                self._engine = InProcessEngine([
                    ValidationClient(name, store_path(self.artifacts, name), self.architectures, classes, size,
                                     self.received / safe_name(name) if self.received is not None else None, self.params.seed, self.device)
                    for name in everyone])
            self._federation = Federation(self._engine, self.run, self.ledger)
        return self._federation

    def _scorer(self, key: str) -> Callable[[int, Weights], dict[str, float]]:
        if key not in self.architectures:
            raise KeyError(f"no architecture {key!r} to validate (have: {', '.join(self.architectures)})")
        if key not in self._scorers:
            federation = self._engine_federation()
            replies = federation.query(self.clients, with_state=False)
            samples = {name: reply.samples.get("val", 0) for name, reply in replies.items() if reply.ok}
            if not any(samples.values()):
                raise DsfedError(f"no source client has a val split ({', '.join(self.clients)}): nothing to validate on")
            self._scorers[key] = validation_scorer(federation, self.clients, samples, model=key)
        return self._scorers[key]

    def score(self, round: int, model: Segmenter, key: str) -> dict[str, float]:
        """Mean (and per-client) real val Dice of ``model``'s weights; ``key`` names its architecture."""
        weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        metrics = self._scorer(key)(round, weights)
        if math.isnan(metrics["val_dice"]):
            log.warning("round %d: no source client could validate %s", round, key)
        return metrics

    def deliver(self, round: int, what: str, payload: bytes) -> dict[str, bool]:
        """Send ``payload`` to every client of the task; which took it (ledger: down + receipt rows)."""
        replies = self._engine_federation().deliver(round, what, payload, list(self.params.clients))
        return {name: reply.ok for name, reply in replies.items()}

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
