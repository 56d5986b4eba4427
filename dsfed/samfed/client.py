"""A SAM-Fed client: unlabelled private images, the SAM teacher's cached predictions, dual distillation.

The client receives the teacher once (a delivery: the LoRA adapter, decoder and head; it holds the base SAM
from the same foundation checkpoint as the server), runs it over its own images and keeps only the
probabilities (horizontal-flip averaged, the dossier's O2); the teacher is then dropped. Each round it trains
the received global model on (i) a supervised pass over the public set, (ii) pseudo-labels on its own images
(SAM-Fed: the agreement mask between the teacher and the received global model; or a baseline's), and
(iii) KL distillation from the received global model. It never reads its training masks: its store is opened
without them, except by the supervised upper bound (``pseudo: labels``), which opens it as an oracle.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch.utils.data import ConcatDataset, DataLoader

from dsfed.data.dataset import StoreDataset
from dsfed.data.splits import stable_seed
from dsfed.data.store import ClientStore
from dsfed.data.transforms import AugmentConfig
from dsfed.evaluation.metrics import evaluate, summarise
from dsfed.federated.protocol import ClientInfo, FitResult, Weights
from dsfed.io import atomic_path, write_safetensors
from dsfed.models import Segmenter
from dsfed.samfed.agreement import agreement_targets, confidence_histogram, next_threshold, sam_targets, self_targets
from dsfed.samfed.losses import bernoulli_kd, weighted_bce_dice
from dsfed.samfed.settings import AgreementConfig
from dsfed.samfed.views import photometric, predict_probs
from dsfed.training.losses import LossConfig, build_loss

__all__ = ["SamFedClient", "SamFedTraining"]

log = logging.getLogger(__name__)
TEACHER = "teacher"


@dataclass(frozen=True)
class SamFedTraining:
    """One variant's local training (see :class:`dsfed.samfed.settings.VariantConfig`)."""

    pseudo: str = "agreement"
    global_kd: bool = True
    public_pass: bool = True
    agreement: AgreementConfig = AgreementConfig()
    threshold: str = "adaptive"
    lam_sam: float = 1.0
    lam_kd: float = 10.0
    temperature: float = 2.0
    epochs: int = 1
    batch_size: int = 4
    lr: float = 1e-3
    loss: LossConfig = LossConfig()
    augment: AugmentConfig | None = None
    eval_batch_size: int = 16


class SamFedClient:
    """:class:`~dsfed.federated.protocol.ClientAlgo` of an unlabelled SAM-Fed client.

    Args:
        name: the client.
        store: its store (``labels: test_only`` or ``none``).
        public: the public labelled store (the server's D_p, public by definition), or None.
        model_factory: builds the lightweight model (identical initial weights on every call).
        teacher_factory: turns the delivered adapter file into the SAM teacher (None: the variant needs none).
        training: the variant's local training.
        cache: a folder of the client's own (its teacher cache lives there).
    """

    def __init__(self, name: str, store: Path, public: Path | None, model_factory: Callable[[], Segmenter],
                 teacher_factory: Callable[[Path], Segmenter] | None, training: SamFedTraining, cache: Path,
                 seed: int = 0, device: torch.device | None = None) -> None:
        self.name = name
        self.training = training
        self.device = device or torch.device("cpu")
        oracle = training.pseudo == "labels"
        self.store = ClientStore(store, oracle=oracle)
        # an unlabelled client has no use for a val split: its val images train too
        self.train_set: ConcatDataset[dict[str, Any]] = ConcatDataset(
            [StoreDataset(self.store, split, images_only=not oracle) for split in ("train", "val") if len(self.store.split(split))])
        augment = training.augment if training.augment is not None and training.augment.enabled else None
        self.public_set = StoreDataset(ClientStore(public), "train", augment=augment) if public is not None and training.public_pass else None
        self.model = model_factory().to(self.device)
        self.partner = model_factory().to(self.device).eval()   # the received global model, frozen for the round
        for p in self.partner.parameters():
            p.requires_grad_(False)
        self.teacher_factory = teacher_factory
        self.cache = cache
        self.seed = seed
        self.tau = training.agreement.start
        self.optimizer = torch.optim.Adam([p for p in self.model.parameters() if p.requires_grad], lr=training.lr)
        self.supervised = build_loss(training.loss).to(self.device)
        self.teacher_probs: torch.Tensor | None = None   # (N, C, Sm, Sm) float16, rows of the store
        self._digest: str | None = None

    # ---------------------------------------------------------------------------------------------
    def describe(self) -> ClientInfo:
        samples = {"train": len(self.train_set), "val": 0, "test": len(self.store.split("test"))}
        return ClientInfo(samples, str(self.store.attrs.get("fingerprint")))

    def _cache_file(self) -> Path:
        return self.cache / "teacher-probs.safetensors"

    def holds(self) -> dict[str, str]:
        """The teacher's digest when its predictions are cached on this client's disk. A cache removed since it
        was read (a fresh run clears it) is forgotten in memory too, so the teacher is delivered again."""
        if not self._cache_file().is_file():
            self._digest, self.teacher_probs = None, None
            return {}
        if self._digest is None:
            with safe_open(str(self._cache_file()), framework="pt") as fh:
                self._digest = fh.metadata().get("digest")
        return {TEACHER: self._digest} if self._digest else {}

    def receive(self, what: str, payload: bytes, digest: str) -> dict[str, float]:
        """The teacher arrives: predict every own image once (train, val and test rows), cache, drop the teacher."""
        if what != TEACHER or self.teacher_factory is None:
            raise ValueError(f"client {self.name}: cannot use a delivery of {what!r}")
        self.cache.mkdir(parents=True, exist_ok=True)
        adapter = self.cache / "teacher-adapter.safetensors"
        with atomic_path(adapter, overwrite=True) as tmp:
            tmp.write_bytes(payload)
        teacher = self.teacher_factory(adapter).to(self.device).eval()
        rows = torch.cat([torch.as_tensor(self.store.split(s)) for s in ("train", "val", "test")])
        probs = predict_probs(teacher, self.store, rows.tolist(), self.training.eval_batch_size, self.device, flip=True)
        full = torch.zeros((len(self.store), *probs.shape[1:]), dtype=torch.float16)
        full[rows] = probs.half()
        with atomic_path(self._cache_file(), overwrite=True) as tmp:
            write_safetensors({"probs": full}, str(tmp), metadata={"digest": digest})
        self.teacher_probs, self._digest = full, digest
        del teacher
        log.info("client %s: cached the teacher's predictions on %d own images", self.name, len(rows))
        return {"cached_images": float(len(rows))}

    def _teacher(self) -> torch.Tensor:
        if self.teacher_probs is None:
            if not self.holds():
                raise ValueError(f"client {self.name}: this variant needs the SAM teacher, which was never delivered")
            with safe_open(str(self._cache_file()), framework="pt") as fh:
                self.teacher_probs = fh.get_tensor("probs")
        return self.teacher_probs

    # ---------------------------------------------------------------------------------------------
    def _targets(self, images: torch.Tensor, rows: torch.Tensor, flip: torch.Tensor, batch: dict[str, Any],
                 partner_probs: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.training
        if t.pseudo == "labels":
            masks = batch["mask"].to(self.device)
            return torch.where(flip.view(-1, 1, 1, 1), masks.flip(-1), masks), torch.ones_like(masks)
        if t.pseudo == "self":
            with torch.no_grad():
                own = torch.sigmoid(self.model(images))
            return self_targets(own, self.tau)
        teacher = self._teacher()[rows].float().to(self.device)
        teacher = torch.where(flip.view(-1, 1, 1, 1), teacher.flip(-1), teacher)
        if t.pseudo == "sam":
            return sam_targets(teacher)
        assert partner_probs is not None
        return agreement_targets(teacher, partner_probs, self.tau, t.agreement.arbitration)

    def train(self, weights: Weights, round: int, config: dict[str, Any]) -> FitResult:
        """One round: the public pass, then the own images with the received global model as partner and KD teacher."""
        self.model.load_state_dict(weights, strict=True)
        self.partner.load_state_dict(weights, strict=True)
        self.model.train()
        losses = self._public_pass(round) if self.public_set is not None else []
        metrics = self._own_pass(round, losses, self.partner)
        return FitResult({k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}, len(self.train_set), metrics)

    def _public_pass(self, round: int) -> list[float]:
        """(i) One supervised pass over the public set (augmented); returns the batch losses."""
        assert self.public_set is not None
        losses = []
        if self.public_set.augment is not None:
            self.public_set.augment.set_random_state(seed=stable_seed(self.seed, self.name, round, "public"))
        g = torch.Generator().manual_seed(stable_seed(self.seed, self.name, round, "public-shuffle"))
        for batch in DataLoader(self.public_set, batch_size=self.training.batch_size, shuffle=True, generator=g):
            loss = self.supervised(self.model(batch["image"].to(self.device)), batch["mask"].to(self.device))
            self._step(loss)
            losses.append(float(loss.detach()))
        return losses

    def _own_pass(self, round: int, losses: list[float], partner: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, float]:
        """(ii) pseudo-labels and (iii) KD from ``partner`` on the client's own images; then the round's metrics,
        the pseudo-label quality on its test images (report only) and the next threshold."""
        t = self.training
        hist = torch.zeros(1000, dtype=torch.float64)
        kept, pixels = 0.0, 0
        if t.pseudo != "none" or t.global_kd:
            g = torch.Generator().manual_seed(stable_seed(self.seed, self.name, round, "shuffle"))
            views = torch.Generator().manual_seed(stable_seed(self.seed, self.name, round, "views"))
            for _ in range(t.epochs):
                for batch in DataLoader(self.train_set, batch_size=t.batch_size, shuffle=True, generator=g):
                    images = batch["image"].to(self.device)
                    rows = torch.as_tensor(batch["index"])
                    flip = torch.rand(len(images), generator=views) < 0.5
                    weak = torch.where(flip.view(-1, 1, 1, 1).to(self.device), images.flip(-1), images)
                    strong = photometric(weak, views)
                    partner_logits = None
                    if t.global_kd or t.pseudo == "agreement":
                        with torch.no_grad():
                            partner_logits = partner(weak)
                    partner_probs = torch.sigmoid(partner_logits) if partner_logits is not None else None
                    if partner_probs is not None:
                        hist += confidence_histogram(partner_probs)
                    logits = self.model(strong)
                    loss = logits.sum() * 0.0
                    if t.pseudo != "none":
                        target, weight = self._targets(weak, rows, flip.to(self.device), batch, partner_probs)
                        loss = loss + t.lam_sam * weighted_bce_dice(logits, target, weight)
                        kept += float((weight > 0).float().sum())
                        pixels += weight.numel()
                    if t.global_kd and partner_logits is not None:
                        loss = loss + t.lam_kd * bernoulli_kd(logits, partner_logits, t.temperature)
                    self._step(loss)
                    losses.append(float(loss.detach()))
        metrics = {"loss": sum(losses) / max(len(losses), 1), "tau": self.tau}
        if pixels:
            metrics["pl_kept"] = kept / pixels
        metrics.update(self._pseudo_quality(partner))   # at this round's threshold, before it adapts
        if t.threshold == "adaptive" and t.pseudo in ("agreement", "self"):
            a = t.agreement
            self.tau = next_threshold(hist, self.tau, a.quantile, a.low, a.high)
        return metrics

    def _step(self, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss):
            raise FloatingPointError(f"client {self.name}: non-finite loss {float(loss)}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def _pseudo_quality(self, partner: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, float]:
        """For the report only: the round's pseudo-labels on the client's test images (whose masks it may read),
        the share of pixels kept, their accuracy and their foreground Dice against the masks (over kept pixels).
        Never used for training."""
        t = self.training
        if t.pseudo not in ("agreement", "sam") or self.store.labels == "none":
            return {}
        rows = torch.as_tensor(self.store.split("test"))
        if not len(rows):
            return {}
        test = StoreDataset(self.store, "test")
        kept = correct = total = inter = denom = 0.0
        for batch in DataLoader(test, batch_size=t.eval_batch_size):
            images, masks = batch["image"].to(self.device), batch["mask"].to(self.device)
            teacher = self._teacher()[torch.as_tensor(batch["index"])].float().to(self.device)
            if t.pseudo == "sam":
                target, weight = sam_targets(teacher)
            else:
                with torch.no_grad():
                    probs = torch.sigmoid(partner(images))
                target, weight = agreement_targets(teacher, probs, self.tau, t.agreement.arbitration)
            keep = weight > 0
            kept += float(keep.sum())
            correct += float(((target == masks) & keep).sum())
            total += weight.numel()
            inter += float((target * masks * keep).sum())
            denom += float(((target + masks) * keep).sum())
        return {"pl_test_kept": kept / max(total, 1), "pl_test_accuracy": correct / max(kept, 1),
                "pl_test_dice": 2 * inter / denom if denom else float("nan")}

    def evaluate(self, weights: Weights, split: str) -> dict[str, float]:
        self.model.load_state_dict(weights, strict=True)
        return summarise(evaluate(self.model, StoreDataset(self.store, split), self.training.eval_batch_size), self.store.classes)

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "tau": self.tau}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.tau = float(state["tau"])
