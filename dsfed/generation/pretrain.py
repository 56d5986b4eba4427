"""Pre-training the released weights: backbone, then a generic mask ControlNet, on the public phantom corpora of several tasks."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dsfed.data.phantom import TASK_CLASSES
from dsfed.errors import DsfedError
from dsfed.generation.backbone import EmbeddedBackbone, embedded_folder
from dsfed.generation.condition import render_condition
from dsfed.generation.controlnet import build_controlnet, load_controlnet, save_controlnet
from dsfed.generation.corpus import CORPUS_TASKS, DEFAULT_TABLE, TASK_PROMPTS, TaskCorpus, multitask_corpus
from dsfed.generation.grid import outline, save_grid
from dsfed.generation.sample import sample
from dsfed.generation.settings import BackboneSpec, DiffusionTrainSpec, SamplerSpec
from dsfed.generation.train import train_backbone, train_controlnet
from dsfed.io import atomic_path, write_json
from dsfed.provenance import provenance

__all__ = ["CONTROLNET_WEIGHTS", "disc_offsets", "mask_contrast", "pretrain", "save_grid"]  # save_grid re-exported

log = logging.getLogger(__name__)

CONTROLNET_WEIGHTS = "controlnet.safetensors"


def disc_offsets(images: np.ndarray, masks: np.ndarray, bright_fraction: float = 0.15) -> np.ndarray:
    """Per image, the distance in px between the optic disc's centre in ``masks`` (channel 0) and the
    centroid of the brightest ``bright_fraction`` of pixels (the phantom disc is the brightest structure).

    Args:
        images: (N, 3, S, S) uint8. masks: (N, K, S, S) {0, 1}.

    Returns:
        (N,) float distances; NaN where a mask has no disc.
    """
    n, _, s, _ = images.shape
    yy, xx = np.mgrid[0:s, 0:s]
    out = np.full(n, np.nan)
    for i in range(n):
        disc = masks[i, 0] > 0
        if not disc.any():
            continue
        lum = images[i].astype(np.float32).mean(0)
        bright = lum >= np.quantile(lum, 1.0 - bright_fraction)
        dy = yy[bright].mean() - yy[disc].mean()
        dx = xx[bright].mean() - xx[disc].mean()
        out[i] = float(np.hypot(dy, dx))
    return out


def mask_contrast(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Per image, |mean luminance inside the union of ``masks`` - mean luminance outside| (0-255 scale):
    a task-agnostic check that generated images put a structure where the condition mask does.

    Args:
        images: (N, 3, S, S) uint8. masks: (N, K, S, S) {0, 1}.

    Returns:
        (N,) float; NaN where a mask is empty or covers everything.
    """
    out = np.full(len(images), np.nan)
    for i in range(len(images)):
        inside = masks[i].max(0) > 0
        if inside.all() or not inside.any():
            continue
        lum = images[i].astype(np.float32).mean(0)
        out[i] = abs(float(lum[inside].mean()) - float(lum[~inside].mean()))
    return out


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _warm_start(backbone: EmbeddedBackbone, init: Path) -> Path:
    """Copy the UNet of the released backbone in ``init`` (a folder holding ``backbone/``, or the backbone
    folder) into ``backbone``; each prompt row starts from the row of the same text there, else its generic
    row. Returns the ControlNet file beside it (may not exist)."""
    folder = embedded_folder(init)
    old = EmbeddedBackbone.load(folder)
    mine = backbone.spec.model_dump(exclude={"prompts"})
    theirs = old.spec.model_dump(exclude={"prompts"})
    if mine != theirs:
        changed = sorted(k for k in mine if mine[k] != theirs[k])
        raise DsfedError(f"{folder}: its backbone differs from the spec in {', '.join(changed)} (init needs the same architecture)")
    backbone.unet.load_state_dict(old.unet.state_dict())
    with torch.no_grad():
        backbone.prompt[0] = old.prompt[0]
        for i, text in enumerate(backbone.spec.prompts):
            backbone.prompt[1 + i] = old.prompt[old.prompt_row(text)]
    log.info("backbone warm-started from %s", folder)
    return folder.parent / CONTROLNET_WEIGHTS


def _checks(held: list[TaskCorpus], generated: dict[str, np.ndarray]) -> dict[str, Any]:
    """Per task: mask contrast of generated images (true and shuffled masks) and of real ones; fundus adds
    the disc placement of 2026-11's check."""
    out: dict[str, Any] = {}
    for task in held:
        gen, masks, real = generated[task.task], task.masks, task.images
        shuffled = np.roll(masks, 1, axis=0)
        out[task.task] = {
            "contrast_generated": float(np.nanmedian(mask_contrast(gen, masks))),
            "contrast_real": float(np.nanmedian(mask_contrast(real, masks))),
            "contrast_shuffled_masks": float(np.nanmedian(mask_contrast(gen, shuffled))),
        }
        if task.task == "fundus":
            out[task.task].update({
                "disc_generated_median_px": float(np.nanmedian(disc_offsets(gen, masks))),
                "disc_real_median_px": float(np.nanmedian(disc_offsets(real, masks))),
                "disc_shuffled_masks_median_px": float(np.nanmedian(disc_offsets(gen, shuffled))),
            })
    return out


def pretrain(
    out_dir: str | Path,
    corpus_n: int = 2000,
    backbone_spec: BackboneSpec | None = None,
    backbone_train: DiffusionTrainSpec | None = None,
    controlnet_train: DiffusionTrainSpec | None = None,
    sampler: SamplerSpec | None = None,
    device: str = "cpu",
    corpus_seed: int = 0,
    table: str | Path = DEFAULT_TABLE,
    tasks: tuple[str, ...] = ("fundus", "skin", "polyp"),
    init: str | Path | None = None,
    workers: int | None = None,
    grid_n: int = 8,
    eval_n: int = 64,
    sample_batch: int = 64,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Build the public corpus of ``tasks`` (``corpus_n`` each), train the backbone with one learned prompt
    per task (:data:`TASK_PROMPTS`), then a generic ControlNet on the class-agnostic condition images
    (backbone frozen). ``init``: a released-weights folder to warm-start both from (same architecture).

    Writes ``out_dir`` atomically (nothing on failure):
        backbone/backbone.{safetensors,json}, controlnet.safetensors (fp16; provenance, tasks and their
        classes in their metadata), losses.json (per-step losses of both runs), grid.png (per task,
        ``grid_n`` columns; rows: condition images, ControlNet samples, samples with the mask outlined, the
        real phantom for that mask, unconditional backbone samples with the task's prompt; masks the
        training never saw), pretrain.json (provenance with the exact call arguments, parameter counts,
        timings, per-task checks).

    ``workers``: processes rendering the corpus (about 70 ms per 64 px sample); None = all CPUs but one
    when the corpus has 512 samples or more.

    Returns:
        the summary written to pretrain.json.
    """
    unknown = [t for t in tasks if t not in CORPUS_TASKS]
    if unknown or not tasks:
        raise DsfedError(f"tasks {list(tasks)}: choose from {', '.join(CORPUS_TASKS)}")
    backbone_spec = (backbone_spec or BackboneSpec()).model_copy(update={"prompts": tuple(TASK_PROMPTS[t] for t in tasks)})
    backbone_train = backbone_train or DiffusionTrainSpec()
    controlnet_train = controlnet_train or DiffusionTrainSpec(seed=backbone_train.seed + 1)
    sampler = sampler or SamplerSpec()
    params = {
        "corpus_n": corpus_n, "backbone_spec": backbone_spec.model_dump(mode="json"),
        "backbone_train": backbone_train.model_dump(mode="json"), "controlnet_train": controlnet_train.model_dump(mode="json"),
        "sampler": sampler.model_dump(mode="json"), "device": device, "corpus_seed": corpus_seed,
        "table": str(table), "tasks": list(tasks), "init": None if init is None else str(init), "grid_n": grid_n, "eval_n": eval_n,
    }
    meta = provenance(params)
    timings: dict[str, float] = {}
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir}: already exists (pass overwrite=True to replace it)")

    if workers is None:
        workers = max(0, (os.cpu_count() or 1) - 1) if corpus_n * len(tasks) >= 512 else 0
    t0 = time.perf_counter()
    size = backbone_spec.sample_size
    held_n = max(grid_n, eval_n)
    corpora = multitask_corpus(corpus_n + held_n, size, corpus_seed, tasks, table, supersample=2, workers=workers, progress=progress)
    train = [TaskCorpus(c.task, c.images[:corpus_n], c.masks[:corpus_n], c.channels) for c in corpora]
    held = [TaskCorpus(c.task, c.images[corpus_n:], c.masks[corpus_n:], c.channels) for c in corpora]
    images = np.concatenate([c.images for c in train])
    rows = np.concatenate([np.full(len(c.images), 1 + k, np.int64) for k, c in enumerate(train)])
    conditions = torch.cat([render_condition(c.masks, size) for c in train])
    timings["corpus_s"] = time.perf_counter() - t0

    torch.manual_seed(backbone_train.seed)
    backbone = EmbeddedBackbone(backbone_spec, meta)
    init_controlnet = _warm_start(backbone, Path(init)) if init is not None else None
    t0 = time.perf_counter()
    backbone_losses = train_backbone(backbone, images, backbone_train, device, progress, prompt_rows=rows)
    timings["backbone_s"] = time.perf_counter() - t0

    if init_controlnet is not None and init_controlnet.is_file():
        controlnet = load_controlnet(backbone.unet, init_controlnet)
    else:
        controlnet = build_controlnet(backbone.unet)
    t0 = time.perf_counter()
    controlnet_losses = train_controlnet(backbone, controlnet, images, None, controlnet_train, device, progress,
                                         prompt_rows=rows, conditions=conditions)
    timings["controlnet_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    generated, unconditional = {}, {}
    for task in held:
        backbone.use_prompt(TASK_PROMPTS[task.task])
        generated[task.task] = sample(backbone, controlnet, task.masks[:eval_n], sampler, seed=0, batch_size=sample_batch,
                                      device=device, progress=progress)
        unconditional[task.task] = sample(backbone, None, task.masks[:grid_n], sampler, seed=1, batch_size=sample_batch,
                                          device=device, progress=progress)
    backbone.prompt_index = 0
    timings["sample_eval_s"] = time.perf_counter() - t0
    summary = {
        **meta,
        "tasks": {t.task: list(TASK_CLASSES[t.task]) for t in held},
        "prompts": {t.task: TASK_PROMPTS[t.task] for t in held},
        "parameters": {"backbone": _count(backbone), "controlnet": _count(controlnet)},
        "timings": timings,
        "final_loss": {"backbone": float(np.mean(backbone_losses[-50:])), "controlnet": float(np.mean(controlnet_losses[-50:]))},
        "checks": _checks([TaskCorpus(t.task, t.images[:eval_n], t.masks[:eval_n], t.channels) for t in held], generated),
    }
    file_meta = {**meta, "tasks": summary["tasks"]}
    backbone.to("cpu")
    controlnet.to("cpu")
    with atomic_path(out_dir, overwrite=overwrite) as tmp:
        backbone.save(tmp / "backbone", file_meta)
        save_controlnet(controlnet, tmp / CONTROLNET_WEIGHTS, file_meta)
        write_json(tmp / "losses.json", {"backbone": backbone_losses, "controlnet": controlnet_losses})
        save_grid(tmp / "grid.png", _grid_rows(held, generated, unconditional, grid_n, size))
        summary["bytes"] = {
            "backbone": (tmp / "backbone" / "backbone.safetensors").stat().st_size,
            "controlnet": (tmp / CONTROLNET_WEIGHTS).stat().st_size,
        }
        write_json(tmp / "pretrain.json", summary)
    log.info("pretrained weights in %s: %s", out_dir, summary["checks"])
    return summary


def _grid_rows(held: list[TaskCorpus], generated: dict[str, np.ndarray], unconditional: dict[str, np.ndarray],
               grid_n: int, size: int) -> list[np.ndarray]:
    """The grid's five rows, ``grid_n`` columns per task side by side."""
    rows: list[list[np.ndarray]] = [[], [], [], [], []]
    for task in held:
        masks = task.masks[:grid_n]
        gen = generated[task.task][:grid_n]
        rows[0].append((render_condition(masks, size).numpy() * 255).round().astype(np.uint8))
        rows[1].append(gen)
        rows[2].append(np.stack([outline(g, m) for g, m in zip(gen, masks, strict=True)]))
        rows[3].append(task.images[:grid_n])
        rows[4].append(unconditional[task.task])
    return [np.concatenate(r) for r in rows]
