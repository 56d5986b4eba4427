"""Validation at the clients: the server sends weights, each source client scores them on its own real
val split and sends back numbers only (every payload in the ledger).

The federated stages select their round this way; the server-side stages that train on synthetic data
(``distill``) use it to select on real data too, with no client image ever reaching the server.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from dsfed.config import Params
from dsfed.errors import DsfedError
from dsfed.federated.clients import LocalTraining, SegmentationClient
from dsfed.federated.engines import InProcessEngine
from dsfed.federated.federation import Federation
from dsfed.federated.ledger import Ledger
from dsfed.federated.protocol import Weights
from dsfed.models import Segmenter
from dsfed.stages.prepare import store_path

__all__ = ["ClientValidation", "validation_scorer"]

log = logging.getLogger(__name__)


def validation_scorer(federation: Federation, clients: Sequence[str], samples: dict[str, int]) -> Callable[[int, Weights], dict[str, float]]:
    """``score(round, weights) -> {"val_dice": sample-weighted mean, "val_dice_<client>": ...}`` over ``clients``
    that hold a val split; a client that fails is left out of the mean (NaN when none answers)."""
    scored = [name for name in clients if samples.get(name, 0) > 0]

    def score(round: int, weights: Weights) -> dict[str, float]:
        out: dict[str, float] = {}
        total, count = 0.0, 0
        for name, reply in federation.evaluate(round, weights, "val", scored).items():
            if not reply.ok or not reply.num_samples:
                continue
            out[f"val_dice_{name}"] = reply.metrics["dice"]
            total += reply.metrics["dice"] * reply.num_samples
            count += reply.num_samples
        out["val_dice"] = total / count if count else float("nan")
        return out

    return score


class ClientValidation:
    """Scores a server-side model on the source clients' real val splits through an engine.

    Each model architecture gets its own evaluation-only clients (built on first use by ``factory``, one
    model per client, as a client would hold it); the weights travel as safetensors bytes and the ledger
    records them as ``val_weights`` down and ``val_metrics`` up.

    Args:
        params: validated params (the clients, the eval batch size, the seed).
        artifacts: the artifacts root (the clients open their own stores there).
        clients: the clients that validate (source clients only, never the held-out one).
        ledger: where every payload is recorded.
        run: the run's identity, as the clients see it.
        device: where the clients compute.
    """

    def __init__(self, params: Params, artifacts: str | Path, clients: Sequence[str], ledger: Ledger, run: str,
                 device: torch.device) -> None:
        if params.data.holdout in clients:
            raise ValueError(f"{params.data.holdout} is the held-out client: it never validates")
        self.params, self.artifacts, self.clients = params, Path(artifacts), list(clients)
        self.ledger, self.run, self.device = ledger, run, device
        self._scorers: dict[str, Callable[[int, Weights], dict[str, float]]] = {}
        self._engines: list[InProcessEngine] = []

    def _scorer(self, key: str, factory: Callable[[], Segmenter]) -> Callable[[int, Weights], dict[str, float]]:
        if key not in self._scorers:
            training = LocalTraining(augment=None)
            with torch.random.fork_rng(devices=[]):  # building the clients' empty models leaves the caller's RNG alone
                clients = [SegmentationClient(name, store_path(self.artifacts, name), factory, training, seed=self.params.seed,
                                              device=self.device) for name in self.clients]
            engine = InProcessEngine(clients)
            self._engines.append(engine)
            federation = Federation(engine, self.run, self.ledger)
            samples = {name: reply.samples.get("val", 0) for name, reply in federation.query(with_state=False).items() if reply.ok}
            if not any(samples.values()):
                raise DsfedError(f"no source client has a val split ({', '.join(self.clients)}): nothing to validate on")
            self._scorers[key] = validation_scorer(federation, self.clients, samples)
        return self._scorers[key]

    def score(self, round: int, model: Segmenter, key: str, factory: Callable[[], Segmenter]) -> dict[str, float]:
        """Mean (and per-client) real val Dice of ``model``'s weights; ``key`` names its architecture and
        ``factory`` builds an empty one of it at the clients."""
        weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        metrics = self._scorer(key, factory)(round, weights)
        if math.isnan(metrics["val_dice"]):
            log.warning("round %d: no source client could validate %s", round, key)
        return metrics

    def close(self) -> None:
        for engine in self._engines:
            engine.close()
