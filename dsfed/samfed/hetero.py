"""A SAM-Fed client of a heterogeneous federation (RC + RF): its own architecture, its weights never leave it.

It receives its architecture's public-set init once (a delivery), then each round: RF on the public set (its
labels plus KL to the server's logits where the server is more accurate), its own unlabelled images with the
agreement partner being its own weak-view prediction (the dossier's O4: no global model reaches it), and it
replies with its logits on the public images. It is tested with its own model.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from dsfed.data.dataset import StoreDataset
from dsfed.data.splits import stable_seed
from dsfed.evaluation.metrics import evaluate, summarise
from dsfed.federated.protocol import FitResult, Weights
from dsfed.io import atomic_path
from dsfed.models import Segmenter
from dsfed.samfed.client import SamFedClient, SamFedTraining
from dsfed.samfed.losses import bernoulli_kd
from dsfed.samfed.rcrf import LOGITS, WEIGHT_PREFIX, kd_mask, pixel_accuracy, public_arrays, public_logits

__all__ = ["INIT", "HeteroClient"]

INIT = "init"


class HeteroClient(SamFedClient):
    """:class:`SamFedClient` for RC + RF (see the module docstring); ``rf_epochs`` passes of RF per round."""

    def __init__(self, name: str, store: Path, public: Path, model_factory: Callable[[], Segmenter],
                 teacher_factory: Callable[[Path], Segmenter] | None, training: SamFedTraining, cache: Path,
                 seed: int = 0, device: torch.device | None = None, rf_epochs: int = 1) -> None:
        super().__init__(name, store, public, model_factory, teacher_factory, training, cache, seed, device)
        from dsfed.data.store import ClientStore

        public_set = ClientStore(public)
        self.public_images, self.public_masks = public_arrays(public_set)
        self.n_public_train = len(public_set.split("train"))
        self.rf_epochs = rf_epochs
        self.trained = False
        self._load_init()

    def _init_file(self) -> Path:
        return self.cache / "init.safetensors"

    def _load_init(self) -> bool:
        if not self._init_file().is_file():
            return False
        self.model.load_state_dict(load_file(str(self._init_file())), strict=True)
        return True

    def holds(self) -> dict[str, str]:
        held = super().holds()
        digest_file = self.cache / "init.sha256"
        if digest_file.is_file():
            held[INIT] = digest_file.read_text().strip()
        return held

    def receive(self, what: str, payload: bytes, digest: str) -> dict[str, float]:
        if what != INIT:
            return super().receive(what, payload, digest)
        self.cache.mkdir(parents=True, exist_ok=True)
        with atomic_path(self._init_file(), overwrite=True) as tmp:
            tmp.write_bytes(payload)
        (self.cache / "init.sha256").write_text(digest)
        self._load_init()
        return {"parameters": float(sum(p.numel() for p in self.model.parameters()))}

    @torch.no_grad()
    def _own_weak(self, images: torch.Tensor) -> torch.Tensor:
        """The agreement partner: the client's own prediction on the weak view (eval mode)."""
        was = self.model.training
        self.model.eval()
        out = self.model(images)
        self.model.train(was)
        return out

    def train(self, weights: Weights, round: int, config: dict[str, Any]) -> FitResult:
        """RF from the server's public logits, the own unlabelled images, then the reply: own public logits."""
        server = weights[LOGITS].float()
        shared = {k.removeprefix(WEIGHT_PREFIX): v for k, v in weights.items() if k.startswith(WEIGHT_PREFIX)}
        if shared:   # several clients of this architecture: start from their group's average
            self.model.load_state_dict(shared, strict=True)
        self.trained = True
        self.model.train()
        losses = self._fusion(round, server)
        metrics = self._own_pass(round, losses, self._own_weak)
        reply = {LOGITS: public_logits(self.model, self.public_images, self.training.eval_batch_size)}
        if shared:
            reply.update({WEIGHT_PREFIX + k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()})
        return FitResult(reply, len(self.train_set), metrics)

    def _fusion(self, round: int, server: torch.Tensor) -> list[float]:
        """RF: ``rf_epochs`` passes over the public train images, supervised plus KL to the server where it is better."""
        t, n = self.training, self.n_public_train
        server_acc = pixel_accuracy(server[:n], self.public_masks[:n])
        g = torch.Generator().manual_seed(stable_seed(self.seed, self.name, round, "fusion"))
        losses = []
        for _ in range(self.rf_epochs):
            for idx in torch.randperm(n, generator=g).split(t.batch_size):
                images, y = self.public_images[idx].to(self.device), self.public_masks[idx].to(self.device)
                logits = self.model(images)
                own_acc = pixel_accuracy(logits.detach().cpu(), self.public_masks[idx])
                gate = kd_mask(server_acc[idx], own_acc).to(self.device)
                kl = torch.stack([bernoulli_kd(logits[i:i + 1], server[idx][i:i + 1].to(self.device), t.temperature)
                                  for i in range(len(idx))])
                loss = self.supervised(logits, y) + t.lam_kd * (gate * kl).mean()
                self._step(loss)
                losses.append(float(loss.detach()))
        return losses

    def evaluate(self, weights: Weights, split: str) -> dict[str, float]:
        """Its own model on its ``split`` (it was sent no model): means, HD95 and the Dice's 95 % bootstrap interval,
        computed here so that only numbers leave the client."""
        from dsfed.evaluation.suite import bootstrap_ci

        per_image = evaluate(self.model, StoreDataset(self.store, split), self.training.eval_batch_size, hd95=True)
        out = summarise(per_image, self.store.classes)
        low, high = bootstrap_ci(per_image["dice"].mean(axis=1), 1000, 0.95, self.seed)
        return {**out, "dice_ci_low": low, "dice_ci_high": high, "n": float(len(per_image["dice"]))}

    def state_dict(self) -> dict[str, Any]:
        """Its own weights are client state (they never travel); ``trained`` False marks the state before round 1."""
        return {**super().state_dict(), "model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
                "trained": self.trained}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.trained = bool(state["trained"])
        # the untrained state was captured before the init arrived: the init is what "untrained" means here
        if self.trained or not self._load_init():
            self.model.load_state_dict(state["model"], strict=True)
