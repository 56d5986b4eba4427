"""A hospital as a federated client: a segmenter trained locally on its own client store."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.data import ConcatDataset, DataLoader

from dsfed.data.dataset import StoreDataset
from dsfed.data.splits import stable_seed
from dsfed.data.store import ClientStore
from dsfed.data.transforms import AugmentConfig
from dsfed.evaluation.metrics import evaluate, summarise
from dsfed.federated.errors import FederatedError
from dsfed.federated.local_keys import LocalKeys
from dsfed.federated.protocol import ClientInfo, ClientSetup, FitResult, Weights
from dsfed.federated.strategies.fedprox import proximal_term
from dsfed.models import Segmenter
from dsfed.training.loop import train_epochs
from dsfed.training.losses import LossConfig, build_loss

__all__ = ["SPLITS", "LocalTraining", "SegmentationClient", "build_segmentation_client"]

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class LocalTraining:
    """How a client trains each round (Adam, the DSFedMed default: lr 1e-4, one local epoch).

    ``optimizer_state``: ``keep`` carries Adam's moments from round to round (what the embedded default
    does); ``reset`` starts every round with a fresh optimiser (the usual FedAvg baseline).
    """

    epochs: int = 1
    batch_size: int = 4
    lr: float = 1e-4
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig | None = field(default_factory=AugmentConfig)
    amp: bool = False
    eval_batch_size: int = 16
    optimizer_state: Literal["keep", "reset"] = "keep"


class SegmentationClient:
    """:class:`~dsfed.federated.protocol.ClientAlgo` for one client store.

    Its images never leave this object: only weights go out (``get_weights`` / ``train``'s result).
    Every round's randomness (shuffle order, augmentation) is seeded from (seed, client, round), so a
    resumed run repeats an interrupted round exactly without saving RNG states.

    Args:
        name: client name.
        stores: its client store (train split used for training); several stores pool their data
            (the ``centralized`` baseline is one client holding every training client's store).
        model_factory: builds this client's segmenter (same architecture on every client).
        training: local training settings.
        local_keys: FedBN-style keys kept local (never sent, never overwritten by the server).
        seed: run seed.
    """

    def __init__(
        self,
        name: str,
        stores: ClientStore | str | Path | Sequence[ClientStore | str | Path],
        model_factory: Callable[[], Segmenter],
        training: LocalTraining,
        local_keys: LocalKeys | None = None,
        seed: int = 0,
        device: torch.device | None = None,
    ) -> None:
        self.name = name
        listed = stores if isinstance(stores, Sequence) and not isinstance(stores, str) else [stores]
        self.stores = [s if isinstance(s, ClientStore) else ClientStore(s) for s in listed]
        self.device = device or torch.device("cpu")
        self.model = model_factory().to(self.device)
        self.training = training
        # frozen weights (the model's frozen_keys) stay like local keys, but are not even checkpointed:
        # every client holds them from the same foundation checkpoint
        self.frozen = LocalKeys(self.model.frozen_keys)
        self.local_keys = LocalKeys([*(local_keys.patterns if local_keys else ()), *self.frozen.patterns])
        self.seed = seed
        augment = training.augment if training.augment is not None and training.augment.enabled else None
        self._info: ClientInfo | None = None
        self.held_out = any(store.is_holdout for store in self.stores)  # tested only: no train or val split to open
        self.train_sets = [] if self.held_out else [StoreDataset(store, "train", augment=augment) for store in self.stores]
        self.train_set: ConcatDataset[dict[str, torch.Tensor]] | None = ConcatDataset(self.train_sets) if self.train_sets else None
        self.optimizer = self._optimizer()
        self.loss = build_loss(training.loss).to(self.device)

    def _optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam([p for p in self.model.parameters() if p.requires_grad], lr=self.training.lr)

    def describe(self) -> ClientInfo:
        """Sample counts per split over its stores, and their fingerprint (one store's own, or a hash of several).

        Read once: the stores do not change during a run, and every evaluation reply carries the counts."""
        if self._info is not None:
            return self._info
        readable = ("test",) if self.held_out else SPLITS
        samples = {split: sum(len(store.split(split)) for store in self.stores) if split in readable else 0 for split in SPLITS}
        prints = [str(store.attrs.get("fingerprint")) for store in self.stores]
        fingerprint = prints[0] if len(prints) == 1 else hashlib.sha256("|".join(prints).encode()).hexdigest()[:16]
        self._info = ClientInfo(samples, fingerprint)
        return self._info

    def _load(self, weights: Weights) -> None:
        """Load the shared ``weights``, keeping this client's local keys."""
        own = self.model.state_dict()
        merged = self.local_keys.merge(weights, self.local_keys.split(own)[1])
        missing = sorted(own.keys() - merged.keys())
        if missing:
            raise KeyError(f"client {self.name}: global weights lack {len(missing)} keys, e.g. {missing[:3]}")
        self.model.load_state_dict(merged, strict=True)

    def get_weights(self) -> Weights:
        return {k: v.detach().to("cpu", copy=True) for k, v in self.local_keys.shared(self.model.state_dict()).items()}

    def train(self, weights: Weights, round: int, config: dict[str, Any]) -> FitResult:
        self._load(weights)
        if self.training.optimizer_state == "reset":
            self.optimizer = self._optimizer()
        generator = torch.Generator().manual_seed(stable_seed(self.seed, self.name, round, "shuffle"))
        for i, part in enumerate(self.train_sets):
            if part.augment is not None:
                part.augment.set_random_state(seed=stable_seed(self.seed, self.name, round, "augment", i))
        if self.train_set is None:
            raise FederatedError(f"client {self.name} is held out: it has no training data")
        loader = DataLoader(self.train_set, batch_size=self.training.batch_size, shuffle=True, generator=generator)
        mu = float(config.get("prox_mu", 0.0))
        extra = None
        if mu > 0:
            anchor = {k: v.detach().clone() for k, v in weights.items()}
            params = dict(self.model.named_parameters())
            extra = lambda: proximal_term(params, anchor, mu)  # noqa: E731
        boxes = torch.Generator().manual_seed(stable_seed(self.seed, self.name, round, "boxes"))
        stats = train_epochs(
            self.model, loader, self.optimizer, self.loss, self.training.epochs, extra_loss=extra,
            amp=self.training.amp, device=self.device, desc=f"client {self.name}, round {round}", generator=boxes,
        )
        return FitResult(self.get_weights(), len(self.train_set), {"loss": stats["loss"]})

    def evaluate(self, weights: Weights, split: str) -> dict[str, float]:
        self._load(weights)
        data: ConcatDataset[dict[str, torch.Tensor]] = ConcatDataset([StoreDataset(store, split) for store in self.stores])
        return summarise(evaluate(self.model, data, self.training.eval_batch_size), self.stores[0].classes)

    def state_dict(self) -> dict[str, Any]:
        return {
            "local": {k: v.detach().clone() for k, v in self.local_keys.split(self.model.state_dict())[1].items()
                      if not self.frozen.is_local(k)},
            "optimizer": self.optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("local"):
            self.model.load_state_dict({**self.model.state_dict(), **state["local"]}, strict=True)
        self.optimizer.load_state_dict(state["optimizer"])



def build_segmentation_client(setup: ClientSetup) -> SegmentationClient:
    """The ``segmentation`` client algorithm: supervised local training on the client's labelled store(s)."""
    cfg, spec = setup.params.federated, setup.method
    training = LocalTraining(
        epochs=cfg.local.epochs, batch_size=cfg.local.batch_size, lr=spec.lr or cfg.local.lr,
        loss=cfg.loss, augment=cfg.augment, amp=cfg.local.amp, optimizer_state=cfg.local.optimizer_state,
    )
    stores = list(setup.stores)
    return SegmentationClient(setup.name, stores[0] if len(stores) == 1 else stores, setup.model_factory, training,
                              LocalKeys(spec.local_keys), setup.params.seed, setup.device)
