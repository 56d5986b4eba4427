"""HSSF's heterogeneous aggregation, RC + RF: clients of any architectures share knowledge through their
predictions on the public set only; no weight ever crosses (docs/samfed.md: HSSF's ``train.py``, adapted).

- **RC, regularity condensation** (the server learns from its clients): per public image, the most accurate
  client's prediction (pixel accuracy against the label, gated at 0.75) teaches the server model by KL where
  it beats the server's own, beside the supervised loss.
- **RF, regularity fusion** (clients learn from the server): each client trains on the public set with its
  labels plus KL to the server's prediction where the server is more accurate than the client.

In the rounds loop each architecture is a weight group whose payload is the server's public-set logits
``{"logits": (N, C, h, w)}`` (down) and each client's own (up): one shape for every architecture. Where several
clients share an architecture (and ``group_fedavg``), their group also carries ``w.<key>`` weights, averaged
among that group's members only (HSSF has one client per architecture; the issue asks for both).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dsfed.data.store import ClientStore
from dsfed.federated.protocol import FitResult, Weights
from dsfed.federated.strategies.base import Strategy
from dsfed.federated.strategies.fedavg import weighted_average
from dsfed.models import Segmenter
from dsfed.samfed.losses import bernoulli_kd
from dsfed.training.losses import LossConfig, build_loss

__all__ = ["GATE", "LOGITS", "RCRF", "WEIGHT_PREFIX", "kd_mask", "pixel_accuracy", "public_arrays", "public_logits"]

LOGITS = "logits"
WEIGHT_PREFIX = "w."
"""Keys ``w.<state key>`` carry an architecture group's weights (FedAvg among clients of one architecture)."""
GATE = 0.75
"""HSSF's gate: a client's prediction teaches the server only where its pixel accuracy exceeds this."""


def public_arrays(store: ClientStore) -> tuple[Tensor, Tensor]:
    """The public set's train then val images and masks: (N, 3, S, S) float [0, 1], (N, C, Sm, Sm) float {0, 1}."""
    rows = np.concatenate([store.split("train"), store.split("val")])
    images = torch.from_numpy(np.stack([np.asarray(store.images[int(r)]) for r in rows]).astype(np.float32) / 255.0)
    masks = torch.from_numpy(np.stack([np.asarray(store.masks[int(r)]) for r in rows]).astype(np.float32))
    return images, masks


@torch.no_grad()
def public_logits(model: Segmenter, images: Tensor, batch_size: int = 16) -> Tensor:
    """The model's logits on the public images, (N, C, Sm, Sm) float16 on CPU (what crosses the wire)."""
    model.eval()
    device = next(model.parameters()).device
    return torch.cat([model(images[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(images), batch_size)]).half()


def pixel_accuracy(logits: Tensor, masks: Tensor) -> Tensor:
    """(N, C, h, w) logits, (N, C, h, w) {0, 1} masks -> (N,) share of pixels (all classes) labelled right."""
    return ((logits.float() > 0) == (masks > 0.5)).float().flatten(1).mean(1)


def kd_mask(teacher_acc: Tensor, student_acc: Tensor, gate: float | None = None) -> Tensor:
    """(N,) 1 where the teacher's prediction is more accurate than the student's (and, with ``gate``, above it)."""
    keep = teacher_acc > student_acc
    if gate is not None:
        keep = keep & (teacher_acc > gate)
    return keep.float()


class RCRF(Strategy):
    """The server side of RC + RF: condensation into the server model, then its new public-set logits.

    Args:
        server_factory: builds the server's model (its initial weights: the public-set init).
        public: the server's public store (labels readable: it is the server's).
        rc_epochs: condensation passes over the public set per round (HSSF: 4).
        lr, batch_size, loss: the server's training.
        lam_kd, temperature: the KL's weight and temperature (HSSF: 10 at T = 2, no T squared).
        seed: shuffling of the condensation passes.

    Its checkpointed state is the server model's weights and optimiser state, plus each client's best
    round by public val Dice (the clients have no labels of their own to select on).
    """

    name = "rcrf"

    def __init__(self, server_factory: Callable[[], Segmenter], public: ClientStore, rc_epochs: int = 1, lr: float = 1e-3,
                 batch_size: int = 4, loss: LossConfig | None = None, lam_kd: float = 10.0, temperature: float = 2.0,
                 seed: int = 0) -> None:
        self.server = server_factory()
        self.images, self.masks = public_arrays(public)
        self.n_train = len(public.split("train"))
        self.rc_epochs, self.batch_size, self.lam_kd, self.temperature, self.seed = rc_epochs, batch_size, lam_kd, temperature, seed
        self.loss = build_loss(loss or LossConfig())
        self.optimizer = torch.optim.Adam([p for p in self.server.parameters() if p.requires_grad], lr=lr)
        self.best: dict[str, list[float]] = {}   # client -> [round, public val Dice]
        self.last: dict[str, float] = {}          # client -> public val Dice of its latest reply

    def server_logits(self) -> Weights:
        """The server model's logits on the public train+val images: the one group's "weights"."""
        return {LOGITS: public_logits(self.server, self.images, self.batch_size * 4)}

    def initialize(self, groups: Mapping[str, Weights]) -> None:
        self.best = {}

    def _val_dice(self, logits: Tensor) -> float:
        """Mean Dice of logits on the public val images (the rows after the train ones)."""
        pred, true = (logits[self.n_train:].float() > 0).float(), self.masks[self.n_train:]
        inter = (pred * true).flatten(1).sum(1)
        denom = pred.flatten(1).sum(1) + true.flatten(1).sum(1)
        return float(((2 * inter + 1e-6) / (denom + 1e-6)).mean()) if len(pred) else float("nan")

    def aggregate_groups(self, round: int, groups: Mapping[str, Weights], results: list[tuple[str, FitResult]],
                         membership: Mapping[str, str]) -> dict[str, Weights]:
        """RC from every client's public logits; then each architecture group's payload: the server's new logits,
        plus, for a group that shares weights (several clients of one architecture), FedAvg over its members only."""
        for name, result in results:   # each client's selection, on its predictions of the public val images
            dice = self._val_dice(result.weights[LOGITS])
            self.last[name] = dice
            if name not in self.best or dice > self.best[name][1]:
                self.best[name] = [float(round), dice]
        self._condense(round, [result.weights[LOGITS] for _, result in results])
        logits = self.server_logits()
        out: dict[str, Weights] = {}
        for group, current in groups.items():
            shared = {k: v for k, v in current.items() if k.startswith(WEIGHT_PREFIX)}
            members = [(n, FitResult({k: v for k, v in r.weights.items() if k.startswith(WEIGHT_PREFIX)}, r.num_samples))
                       for n, r in results if membership[n] == group]
            if shared and members:
                shared = weighted_average(round, members)
            out[group] = {**logits, **shared}
        return out

    def aggregate(self, round: int, global_weights: Weights, results: list[tuple[str, FitResult]], group: str = "") -> Weights:
        raise NotImplementedError("RC + RF aggregates all groups at once (aggregate_groups)")

    def _condense(self, round: int, client_logits: Sequence[Tensor]) -> None:
        """RC: ``rc_epochs`` passes over the public train images, KL towards the best client per image."""
        train_logits = torch.stack([c[: self.n_train].float() for c in client_logits])   # (K, N, C, h, w)
        masks = self.masks[: self.n_train]
        client_acc = torch.stack([pixel_accuracy(c, masks) for c in train_logits])    # (K, N)
        best_acc, best_k = client_acc.max(0)
        teacher = train_logits[best_k, torch.arange(self.n_train)]                     # (N, C, h, w)
        device = next(self.server.parameters()).device
        g = torch.Generator().manual_seed(self.seed * 1000003 + round)
        for _ in range(self.rc_epochs):
            self.server.train()
            for idx in torch.randperm(self.n_train, generator=g).split(self.batch_size):
                images, y = self.images[idx].to(device), masks[idx].to(device)
                logits = self.server(images)
                own_acc = pixel_accuracy(logits.detach().cpu(), masks[idx])
                gate = kd_mask(best_acc[idx], own_acc, GATE).to(device)
                kl = torch.stack([bernoulli_kd(logits[i:i + 1], teacher[idx][i:i + 1].to(device), self.temperature)
                                  for i in range(len(idx))])
                loss = self.loss(logits, y) + self.lam_kd * (gate * kl).mean()
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"RC round {round}: non-finite server loss")
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()

    def state_dict(self) -> dict[str, Any]:
        return {"server": copy.deepcopy(self.server.state_dict()), "optimizer": self.optimizer.state_dict(),
                "best": {k: list(v) for k, v in self.best.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.server.load_state_dict(state["server"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.best = {k: [float(x) for x in v] for k, v in state["best"].items()}
