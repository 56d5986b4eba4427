"""The embedded default's foundations: SAM and the TinySAM student pre-trained on the multi-task public corpus.

No pretrained SAM can be downloaded, so the embedded default earns SAM's "foundation" role by capacity
and data: ``sam_demo`` (9.7 M parameters, larger than the clients' 5.8 M ``tinysam_demo``) trained on the
``public`` phantom sites of several tasks and modalities (fundus disc/cup ROIs, skin lesions, colonoscopy
polyps; randomised acquisition styles; no client's data), the stand-in for SAM's web-scale pre-training.
Its class head has one channel per class of the union layout (recorded as ``classes`` in the file's
metadata): a task whose classes it knows loads those channels by name, any other task re-initialises the
head (:func:`dsfed.models.registry.build_model`).

The TinySAM student (``tinysam_demo``) is distilled from that foundation on the same corpus (labels plus the
teacher's probabilities), as the paper's student starts from the released TinySAM, itself distilled from
SAM. Both ship as project-made "released weights" in ``data/pretrained/embedded/`` (fp16, with a json);
``dsfed pretrain-sam`` and ``dsfed pretrain-tinysam`` rebuild them. Real runs start from the official
SAM and TinySAM checkpoints instead.
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

from dsfed.io import atomic_path, write_safetensors
from dsfed.models import build_model
from dsfed.provenance import provenance, to_safetensors_metadata

__all__ = ["FoundationSpec", "downsample_masks", "pretrain_foundation"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FoundationSpec:
    """How foundation weights are made (recorded in their json).

    ``corpus_n`` and ``val_n`` are per task. ``image_size``/``mask_size`` match the embedded default's data
    section (128 px images, 64 px masks). ``teacher``: a foundation file to distil from (the student).
    """

    model: str = "sam_demo"
    tasks: tuple[str, ...] = ("fundus", "skin", "polyp")
    corpus_n: int = 1200
    val_n: int = 64
    image_size: int = 128
    mask_size: int = 64
    input_size: int | None = None
    epochs: int = 3
    batch_size: int = 8
    lr: float = 3e-4
    seed: int = 0
    corpus_seed: int = 1  # the diffusion backbone's corpus used seed 0: a different draw of the same sites
    teacher: str | None = None
    kd_weight: float = 1.0


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
    """Train ``spec.model`` on the multi-task public corpus (distilling ``spec.teacher`` when given); keep the
    epoch with the best mean val Dice over tasks.

    Writes ``out_dir/<model>.safetensors`` (fp16; provenance and ``classes`` in its metadata) and
    ``out_dir/<model>.json`` (spec, val Dice per epoch and task, timings) atomically.

    Returns:
        the summary written to the json.
    """
    from dsfed.generation.corpus import multitask_corpus, union_classes  # rendering only: no diffusers
    from dsfed.server.multitask import train_multitask

    spec = spec or FoundationSpec()
    out_dir = Path(out_dir)
    weights, summary_path = out_dir / f"{spec.model}.safetensors", out_dir / f"{spec.model}.json"
    if weights.exists() and not overwrite:
        raise FileExistsError(f"{weights}: already exists (pass overwrite=True to replace it)")
    classes = union_classes(spec.tasks)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    corpora = multitask_corpus(spec.corpus_n + spec.val_n, spec.image_size, spec.corpus_seed, spec.tasks, workers=workers,
                               progress=progress)
    corpora = [part._replace(masks=downsample_masks(part.masks, spec.mask_size)) for part in corpora]
    train = [part._replace(images=part.images[: spec.corpus_n], masks=part.masks[: spec.corpus_n]) for part in corpora]
    val = [part._replace(images=part.images[spec.corpus_n :], masks=part.masks[spec.corpus_n :]) for part in corpora]
    timings["corpus_s"] = time.perf_counter() - t0

    dev = torch.device(device)
    teacher = None
    if spec.teacher is not None:
        from dsfed.heads import safetensors_header

        teacher_model = safetensors_header(spec.teacher)[1].get("model", "sam_demo")
        teacher = build_model(teacher_model, num_classes=len(classes), output_size=spec.mask_size, checkpoint=Path(spec.teacher),
                              classes=classes).to(dev)
    torch.manual_seed(spec.seed)
    model = build_model(spec.model, num_classes=len(classes), output_size=spec.mask_size, input_size=spec.input_size).to(dev)
    t0 = time.perf_counter()
    best, history = train_multitask(model, train, val, spec.epochs, spec.batch_size, spec.lr, spec.seed, dev, teacher=teacher,
                                    kd_weight=spec.kd_weight, name=spec.model)
    timings["train_s"] = time.perf_counter() - t0
    best_epoch = max(history, key=lambda h: h["val_dice"])
    summary = {
        **provenance({"spec": asdict(spec), "device": device}),
        "classes": list(classes),
        "parameters": sum(p.numel() for p in model.parameters()),
        "best_val_dice": best_epoch["val_dice"],
        "best_val_dice_per_task": {t: best_epoch[f"val_dice_{t}"] for t in spec.tasks},
        "history": history,
        "timings": timings,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(weights, overwrite=True) as tmp:
        meta = {"model": spec.model, "classes": list(classes), **provenance(summary["params"])}
        write_safetensors(best, str(tmp), metadata=to_safetensors_metadata(meta))
    with atomic_path(summary_path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary
