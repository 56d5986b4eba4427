"""Training one segmenter on several tasks at once (the task-agnostic foundations), optionally from a teacher.

The model has one output channel per class of the union layout (e.g. optic_disc, optic_cup, lesion, polyp).
Every batch holds one task; its loss sees only that task's channels, so a skin image never teaches "no optic
disc here". Batches of the tasks are interleaved in a seeded random order within each epoch. With a
``teacher`` (the foundation SAM, frozen) the student also matches the teacher's per-pixel probabilities on
the same augmented images: TinySAM's own recipe is distillation from SAM.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from dsfed.data.dataset import ArrayDataset
from dsfed.data.phantom import TASK_CLASSES
from dsfed.data.settings import AugmentConfig
from dsfed.evaluation.metrics import evaluate, summarise
from dsfed.generation.corpus import TaskCorpus
from dsfed.models.segmenter import Segmenter
from dsfed.training.losses import build_loss
from dsfed.training.settings import LossConfig

__all__ = ["TaskView", "score_tasks", "train_multitask"]

log = logging.getLogger(__name__)


class TaskView(Segmenter):
    """A multi-task segmenter seen through one task's channels: logits (B, K_task, Sm, Sm)."""

    def __init__(self, model: Segmenter, channels: Sequence[int]) -> None:
        super().__init__(len(channels), model.input_size, model.output_size, model.prompt)
        self.model = model
        self.channels = list(channels)

    def forward(self, images: Tensor, boxes: Tensor | None = None) -> Tensor:
        logits: Tensor = self.model(images, boxes)
        return logits[:, self.channels]


def score_tasks(model: Segmenter, corpora: Sequence[TaskCorpus]) -> dict[str, float]:
    """Val Dice per task (``dice_<task>``, and per class) and ``dice``, their mean over tasks."""
    out: dict[str, float] = {}
    for part in corpora:
        scores = summarise(evaluate(TaskView(model, part.channels), ArrayDataset(part.images, part.masks)), TASK_CLASSES[part.task])
        out[f"dice_{part.task}"] = scores["dice"]
        out.update({k: v for k, v in scores.items() if k.startswith("dice_")})
    out["dice"] = float(np.mean([out[f"dice_{p.task}"] for p in corpora]))
    return out


def _batches(loaders: list[DataLoader], rng: np.random.Generator) -> Iterator[tuple[int, dict[str, Any]]]:
    """(task index, batch) over one epoch of every loader, the tasks interleaved in a random order."""
    order = np.concatenate([np.full(len(loader), t) for t, loader in enumerate(loaders)])
    rng.shuffle(order)
    iterators = [iter(loader) for loader in loaders]
    for t in order:
        yield int(t), next(iterators[t])


def train_multitask(
    model: Segmenter, train: Sequence[TaskCorpus], val: Sequence[TaskCorpus], epochs: int, batch_size: int, lr: float,
    seed: int, device: torch.device, teacher: Segmenter | None = None, kd_weight: float = 1.0, name: str = "model",
) -> tuple[dict[str, Tensor], list[dict[str, float]]]:
    """Train ``model`` (AdamW, cosine over the epochs, BCE pos_weight 2 + 0.5 Dice, MONAI augmentation).

    Returns:
        the fp16 weights of the epoch with the best mean val Dice over tasks, and the per-epoch history.
    """
    rng = np.random.default_rng(seed)
    loaders = [DataLoader(ArrayDataset(p.images, p.masks, augment=AugmentConfig(), seed=seed + t), batch_size=batch_size,
                          shuffle=True, generator=torch.Generator().manual_seed(seed + t)) for t, p in enumerate(train)]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    loss_fn: nn.Module = build_loss(LossConfig()).to(device)
    if teacher is not None:
        teacher.eval().requires_grad_(False)
    history: list[dict[str, float]] = []
    best: tuple[float, dict[str, Tensor]] | None = None
    for epoch in range(1, epochs + 1):
        model.train()
        total, kd_total, seen = 0.0, 0.0, 0
        steps = sum(len(loader) for loader in loaders)
        for t, batch in tqdm(_batches(loaders, rng), total=steps, desc=f"{name} epoch {epoch}/{epochs}", unit="batch",
                             leave=False, disable=None):
            channels = list(train[t].channels)
            images, masks = batch["image"].to(device), batch["mask"].to(device)
            logits = model(images)[:, channels]
            loss = loss_fn(logits, masks)
            if teacher is not None:
                with torch.no_grad():
                    target = torch.sigmoid(teacher(images)[:, channels])
                kd = F.binary_cross_entropy_with_logits(logits, target)
                kd_total += float(kd.detach()) * len(images)
                loss = loss + kd_weight * kd
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(images)
            seen += len(images)
        schedule.step()
        if not np.isfinite(total):
            raise FloatingPointError(f"{name}: the loss is not finite in epoch {epoch}")
        scores = score_tasks(model, val)
        record = {"epoch": epoch, "loss": total / max(seen, 1), **{f"val_{k}": v for k, v in scores.items()}}
        if teacher is not None:
            record["kd"] = kd_total / max(seen, 1)
        history.append(record)
        log.info("%s epoch %d: loss %.4f, val Dice %s", name, epoch, record["loss"],
                 ", ".join(f"{p.task} {scores[f'dice_{p.task}']:.3f}" for p in val))
        if best is None or scores["dice"] > best[0]:
            best = (scores["dice"], {k: v.detach().cpu().half().contiguous() for k, v in model.state_dict().items()})
    assert best is not None
    return best[1], history
