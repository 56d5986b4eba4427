"""The embedded default's foundation model: the server's SAM preset pre-trained on the public phantom corpus.

No pretrained SAM can be downloaded, so the embedded default earns SAM's "foundation" role by capacity
and data: ``sam_demo`` (9.7 M parameters, larger than the clients' 5.8 M ``tinysam_demo``) trained on
phantom fundus ROIs of the broad ``public`` site (randomised acquisition styles; no client's data), the
stand-in for SAM's web-scale pre-training. The result ships as project-made "released weights"
(``data/pretrained/embedded/sam_demo.safetensors``, fp16, with ``sam_demo.json``); ``dsfed pretrain-sam``
rebuilds them. Real runs start from the official SAM checkpoint instead.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch.utils.data import DataLoader

from dsfed.data.dataset import ArrayDataset
from dsfed.data.settings import AugmentConfig
from dsfed.evaluation.metrics import evaluate, summarise
from dsfed.io import atomic_path
from dsfed.models import build_model
from dsfed.provenance import provenance, to_safetensors_metadata
from dsfed.training.loop import train_epochs
from dsfed.training.losses import build_loss
from dsfed.training.settings import LossConfig

__all__ = ["FoundationSpec", "downsample_masks", "pretrain_foundation"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FoundationSpec:
    """How the foundation weights are made (recorded in their json).

    ``image_size``/``mask_size`` match the embedded default's data section (128 px images, 64 px masks).
    """

    model: str = "sam_demo"
    classes: tuple[str, ...] = ("optic_disc", "optic_cup")
    corpus_n: int = 2000
    val_n: int = 128
    image_size: int = 128
    mask_size: int = 64
    epochs: int = 3
    batch_size: int = 8
    lr: float = 3e-4
    seed: int = 0
    corpus_seed: int = 1  # the diffusion backbone's corpus used seed 0: a different draw of the same site


def downsample_masks(masks: np.ndarray, size: int) -> np.ndarray:
    """(N, K, S, S) {0, 1} -> (N, K, size, size) {0, 1} by area coverage >= 0.5 (S a multiple of size)."""
    n, k, s, _ = masks.shape
    if s == size:
        return masks
    if s % size:
        raise ValueError(f"mask side {s} is not a multiple of {size}")
    f = s // size
    cover = masks.reshape(n, k, size, f, size, f).mean(axis=(3, 5))
    return (cover >= 0.5).astype(np.uint8)


def pretrain_foundation(out_dir: str | Path, spec: FoundationSpec | None = None, device: str = "cpu",
                        workers: int = 0, overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train ``spec.model`` on the public corpus; keep the epoch with the best val Dice.

    Writes ``out_dir/<model>.safetensors`` (fp16; provenance in its metadata) and ``out_dir/<model>.json``
    (spec, val Dice per epoch, timings) atomically.

    Returns:
        the summary written to the json.
    """
    from dsfed.generation.corpus import public_corpus  # rendering only; keeps diffusers out of this import

    spec = spec or FoundationSpec()
    out_dir = Path(out_dir)
    weights, summary_path = out_dir / f"{spec.model}.safetensors", out_dir / f"{spec.model}.json"
    if weights.exists() and not overwrite:
        raise FileExistsError(f"{weights}: already exists (pass overwrite=True to replace it)")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    images, masks = public_corpus(spec.corpus_n + spec.val_n, spec.image_size, spec.corpus_seed, classes=spec.classes,
                                  supersample=1, workers=workers, progress=progress)
    masks = downsample_masks(masks, spec.mask_size)
    timings["corpus_s"] = time.perf_counter() - t0

    torch.manual_seed(spec.seed)
    dev = torch.device(device)
    model = build_model(spec.model, num_classes=len(spec.classes), output_size=spec.mask_size).to(dev)
    train = ArrayDataset(images[: spec.corpus_n], masks[: spec.corpus_n], augment=AugmentConfig(), seed=spec.seed)
    val = ArrayDataset(images[spec.corpus_n :], masks[spec.corpus_n :])
    loader = DataLoader(train, batch_size=spec.batch_size, shuffle=True, generator=torch.Generator().manual_seed(spec.seed))
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=spec.epochs)
    loss_fn = build_loss(LossConfig()).to(dev)
    history: list[dict[str, float]] = []
    best: tuple[float, dict[str, torch.Tensor]] | None = None
    t0 = time.perf_counter()
    for epoch in range(1, spec.epochs + 1):
        stats = train_epochs(model, loader, optimizer, loss_fn, device=dev, desc=f"foundation epoch {epoch}/{spec.epochs}")
        schedule.step()
        scores = summarise(evaluate(model, val), spec.classes)
        history.append({"epoch": epoch, "loss": stats["loss"], **{f"val_{k}": v for k, v in scores.items()}})
        log.info("foundation epoch %d: loss %.4f, val Dice %.4f", epoch, stats["loss"], scores["dice"])
        if best is None or scores["dice"] > best[0]:
            best = (scores["dice"], {k: v.detach().cpu().half().contiguous() for k, v in model.state_dict().items()})
    timings["train_s"] = time.perf_counter() - t0
    assert best is not None
    summary = {
        **provenance({"spec": asdict(spec), "device": device}),
        "parameters": sum(p.numel() for p in model.parameters()),
        "best_val_dice": best[0],
        "history": history,
        "timings": timings,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(weights, overwrite=True) as tmp:
        save_file(best[1], str(tmp), metadata=to_safetensors_metadata({"model": spec.model, **provenance(summary["params"])}))
    with atomic_path(summary_path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary
