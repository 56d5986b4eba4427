"""A hospital that scores the server's models and receives the one it deploys: DSFedMed's client side after
federated training.

The server-side DSFedMed stages (``server_sam``, ``distill``) train on synthetic data, select on the source
clients' real validation and ship the distilled student to every client. :class:`ValidationClient` is the
client algorithm they reach through an engine (in process, or a Flower node): it holds one empty model per
architecture the server names, scores the weights it is sent on its own split (numbers go back, nothing else)
and keeps what it is delivered (the deployed student) in its own folder. It never trains.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from dsfed.data.store import ClientStore
from dsfed.federated.engines.base import ClientFailure
from dsfed.federated.errors import FederatedError
from dsfed.federated.protocol import ClientInfo, FitResult, Weights
from dsfed.io import atomic_path, safe_name

__all__ = ["DEPLOYED_MODEL", "ValidationClient", "validation_settings"]

log = logging.getLogger(__name__)

DEPLOYED_MODEL = "deployed_model"
"""The delivery of the model a client deploys (DSFedMed's distilled student); kept as ``<name>.safetensors``."""


def validation_settings(params_json: dict[str, Any], architectures: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """The setup a node builds a :class:`ValidationClient` from (setup kind ``validate``)."""
    return {"params": params_json, "architectures": {k: dict(v) for k, v in sorted(architectures.items())}}


class ValidationClient:
    """:class:`~dsfed.federated.protocol.ClientAlgo` that scores and receives, never trains.

    Args:
        name: client name.
        store: its own client store.
        architectures: key -> :func:`~dsfed.models.card.architecture` (what it builds to hold weights of that key).
        num_classes, output_size: the task's head.
        received: its folder for deliveries (``<what>.safetensors`` and ``<what>.json`` with the digest);
            None: it takes none.
        seed: run seed (its models' initial weights do not matter: every evaluation loads all weights).
        device: where it computes.
        eval_batch_size: evaluation batch.
    """

    def __init__(self, name: str, store: ClientStore | str | Path, architectures: Mapping[str, dict[str, Any]], num_classes: int,
                 output_size: int, received: Path | None = None, seed: int = 0, device: torch.device | None = None, eval_batch_size: int = 16) -> None:
        self.name = name
        self._store = store   # opened on first use: a client whose store is gone fails its replies, not the server
        self.architectures = {k: dict(v) for k, v in architectures.items()}
        self.num_classes, self.output_size = num_classes, output_size
        self.received = Path(received) if received is not None else None
        self.seed = seed
        self.device = device or torch.device("cpu")
        self.eval_batch_size = eval_batch_size
        self._scorers: dict[str, Any] = {}

    @property
    def store(self) -> ClientStore:
        if not isinstance(self._store, ClientStore):
            self._store = ClientStore(self._store)
        return self._store

    # ------------------------------------------------------------------------------------------ scoring
    def _scorer(self, key: str) -> Any:
        """The evaluation-only segmentation client holding an empty model of ``key`` (built on first use)."""
        if key not in self.architectures:
            raise FederatedError(f"client {self.name}: the server named model {key!r}, not one it was set up with "
                                 f"({', '.join(self.architectures)})")
        if key not in self._scorers:
            from dsfed.federated.clients import LocalTraining, SegmentationClient
            from dsfed.models.card import build_architecture

            arch = self.architectures[key]
            with torch.random.fork_rng(devices=[]):  # an empty model's init leaves the caller's RNG alone
                self._scorers[key] = SegmentationClient(
                    self.name, self.store, lambda: build_architecture(arch, self.num_classes, self.output_size),
                    LocalTraining(augment=None, eval_batch_size=self.eval_batch_size), seed=self.seed, device=self.device)
        return self._scorers[key]

    def describe(self) -> ClientInfo:
        """Sample counts per split and the store's fingerprint."""
        held_out = self.store.is_holdout
        samples = {split: 0 if held_out and split != "test" else len(self.store.split(split)) for split in ("train", "val", "test")}
        return ClientInfo(samples, str(self.store.attrs.get("fingerprint")))

    def evaluate_model(self, key: str, weights: Weights, split: str) -> dict[str, float]:
        """Metrics of ``weights`` (a model of architecture ``key``) on this client's ``split``."""
        scored: dict[str, float] = self._scorer(key).evaluate(weights, split)
        return scored

    def evaluate(self, weights: Weights, split: str) -> dict[str, float]:
        """As :meth:`evaluate_model`, when it was set up with one architecture only."""
        if len(self.architectures) != 1:
            raise FederatedError(f"client {self.name} holds {len(self.architectures)} models: the server must name one")
        return self.evaluate_model(next(iter(self.architectures)), weights, split)

    def train(self, weights: Weights, round: int, config: dict[str, Any]) -> FitResult:
        raise FederatedError(f"client {self.name} validates and receives models here: the server must not ask it to train")

    # ------------------------------------------------------------------------------------------ deliveries
    def _file(self, what: str) -> Path:
        if self.received is None:
            raise ValueError(f"client {self.name}: it has no folder for deliveries")
        return self.received / f"{safe_name(what)}.safetensors"

    def holds(self) -> dict[str, str]:
        """What it was delivered: name -> sha256 of the bytes (read from its folder, so a restart keeps it)."""
        out = {}
        folder = self.received
        for note in sorted(folder.glob("*.json")) if folder is not None and folder.is_dir() else []:
            info = json.loads(note.read_text())
            if self._file(str(info["what"])).is_file():
                out[str(info["what"])] = str(info["sha256"])
        return out

    def receive(self, what: str, payload: bytes, digest: str) -> dict[str, float]:
        """Keep a delivered model (:data:`DEPLOYED_MODEL`) in its folder, after checking the bytes' digest and
        that they are safetensors weights."""
        from safetensors.torch import load as load_safetensors

        if what != DEPLOYED_MODEL:
            raise ValueError(f"client {self.name}: cannot use a delivery of {what!r}")
        if hashlib.sha256(payload).hexdigest() != digest:
            raise ClientFailure(f"client {self.name}: the delivery of {what} arrived damaged (sha256 differs)")
        target = self._file(what)
        try:   # refuse bytes that are not safetensors before anything is written
            tensors = load_safetensors(payload)
        except Exception as exc:
            raise ClientFailure(f"client {self.name}: the delivery of {what} is not safetensors weights ({exc})") from None
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target, overwrite=True) as tmp:
            tmp.write_bytes(payload)
        with atomic_path(target.with_suffix(".json"), overwrite=True) as tmp:
            tmp.write_text(json.dumps({"what": what, "sha256": digest, "bytes": len(payload), "tensors": len(tensors)}, sort_keys=True) + "\n")
        log.info("client %s: received %s (%d bytes) -> %s", self.name, what, len(payload), target)
        return {"bytes": float(len(payload)), "tensors": float(len(tensors))}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
