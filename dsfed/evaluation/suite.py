"""The ``evaluate`` stage: every trained model on every client's test split, with intervals and costs.

Models come from their stage folders (a ``model.json`` card beside ``model.safetensors``); a model whose
stage has not run is skipped. Each client's test split is scored per image (Dice, IoU, HD95; MONAI); a
summary gives mean, std and a percentile bootstrap interval of the per-image Dice (``scipy.stats.bootstrap``).
The efficiency table gives parameters, the bytes every ledger of the method recorded, and measured
inference time per image at batch 1.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import bootstrap

from dsfed.config import Params
from dsfed.data.dataset import StoreDataset
from dsfed.data.store import ClientStore, store_path
from dsfed.evaluation.metrics import per_image_metrics
from dsfed.runtime import pick_device
from dsfed.federated.ledger import ledger_totals
from dsfed.io import atomic_path, write_csv, write_json
from dsfed.models import Segmenter, build_model
from dsfed.models.card import load_carded_model
from dsfed.models.prompts import boxes_from_masks

__all__ = ["LABELS", "ModelEntry", "available_models", "bootstrap_ci", "load_test_sets", "run_evaluate_stage", "score_on_tests",
           "source_mean"]

log = logging.getLogger(__name__)

LABELS = {
    "fedunet": "FedU-Net", "fednnunet": "FednnU-Net", "fedtinysam": "FedTinySAM", "fedsam": "FedSAM",
    "centralized": "Centralized SAM",
}


@dataclass
class ModelEntry:
    """One row of the tables: ``key`` (stable id), ``label`` (display), ``folder`` with the card and
    weights, the ``ledgers`` whose bytes make up its communication, its ``group``."""

    key: str
    label: str
    folder: Path
    group: str
    ledgers: list[Path] = field(default_factory=list)
    note: str = ""
    checkpoint: Path | None = None  # a released segmenter file instead of a stage folder (the foundation)

    def load(self, params: Params, device: torch.device) -> Segmenter:
        classes, size = len(params.data.classes), params.data.mask_size
        if self.checkpoint is not None:
            cfg = params.server_sam
            return build_model(cfg.model, num_classes=classes, output_size=size, input_size=cfg.input_size,
                               checkpoint=self.checkpoint).to(device).eval()
        return load_carded_model(self.folder, classes, size, device=device)

    @property
    def available(self) -> bool:
        return self.checkpoint.is_file() if self.checkpoint is not None else (self.folder / "model.json").is_file()


def _is_segmenter_file(path: Path | None) -> bool:
    """A dsfed segmenter's own weights (keys ``sam.*``/``head.*``), not an official SAM checkpoint."""
    if path is None or not path.is_file() or path.suffix != ".safetensors":
        return False
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return any(k.startswith("head.") for k in fh.keys())


def _generation_ledgers(params: Params, artifacts: Path) -> list[Path]:
    names = params.training_clients
    return [artifacts / "generators" / c / "ledger.csv" for c in names] + [artifacts / "quality" / c / "audit_ledger.csv" for c in names]


def available_models(params: Params, artifacts: str | Path) -> list[ModelEntry]:
    """Every model whose stage has written its card, in table order: federated baselines, the server SAM
    before distillation, the DSFedMed models after it."""
    artifacts = Path(artifacts)
    entries: list[ModelEntry] = []
    for method, spec in params.federated.methods.items():
        folder = artifacts / "federated" / method
        ledgers = [] if spec.strategy == "centralized" else [folder / "ledger.csv"]
        note = "pooled raw data (not federated)" if spec.strategy == "centralized" else ""
        entries.append(ModelEntry(method, LABELS.get(method, method), folder, "federated", ledgers, note))
    student = params.distill.student
    generation = _generation_ledgers(params, artifacts)
    foundation = params.server_sam.checkpoint
    if _is_segmenter_file(foundation):
        entries.append(ModelEntry("foundation", "Foundation SAM (pre-trained, zero-shot)", artifacts, "dsfedmed", [],
                                  "released weights, no client data", checkpoint=foundation))
    distill_ledger = artifacts / "distill" / "ledger.csv"
    entries.append(ModelEntry("server_sam", "SAM before distillation (synthetic fine-tune)", artifacts / "server_sam", "dsfedmed",
                              generation, "server only"))
    entries.append(ModelEntry("dsfedmed_tiny", f"DSFedMed {LABELS.get(student, student).removeprefix('Fed')}", artifacts / "distill" / "tiny",
                              "dsfedmed", [artifacts / "federated" / student / "ledger.csv", *generation, distill_ledger]))
    entries.append(ModelEntry("dsfedmed_sam", "DSFedMed SAM", artifacts / "distill" / "sam", "dsfedmed", generation, "server only"))
    return [e for e in entries if e.available]


def bootstrap_ci(values: np.ndarray, n_resamples: int, level: float, seed: int) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (NaNs dropped); (nan, nan) when fewer than 2."""
    values = values[np.isfinite(values)]
    if len(values) < 2 or n_resamples == 0:
        return (math.nan, math.nan)
    if np.ptp(values) == 0:
        return (float(values[0]), float(values[0]))
    res = bootstrap((values,), np.mean, n_resamples=n_resamples, confidence_level=level, method="percentile",
                    random_state=np.random.default_rng(seed))
    return (float(res.confidence_interval.low), float(res.confidence_interval.high))


def _boxes(model: Segmenter, masks: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    """A box-prompted model's prompts: the tight box of each ground-truth mask (as MedSAM is evaluated); else None."""
    if model.prompt != "box":
        return None
    if masks is None:
        raise ValueError("a box-prompted model needs the masks its boxes come from")
    return boxes_from_masks(masks, jitter=0.0).to(device)


@torch.no_grad()
def _predict(model: Segmenter, images: torch.Tensor, device: torch.device, masks: torch.Tensor | None = None, batch: int = 16) -> torch.Tensor:
    """Logits (N, C, Sm, Sm) of ``images`` (N, 3, S, S); box prompts from ``masks`` (N, C, Sm, Sm) when the model takes them."""
    out = []
    for i in range(0, len(images), batch):
        boxes = _boxes(model, masks[i : i + batch] if masks is not None else None, device)
        out.append(model(images[i : i + batch].to(device), boxes).float().cpu())
    return torch.cat(out)


@torch.no_grad()
def inference_ms(model: Segmenter, images: torch.Tensor, device: torch.device, warmup: int = 2, masks: torch.Tensor | None = None) -> float:
    """Median wall time of a batch-1 forward pass over ``images`` (N, 3, S, S) float, in ms (box prompts from ``masks``)."""
    def forward(i: int) -> None:
        model(images[i : i + 1].to(device), _boxes(model, masks[i : i + 1] if masks is not None else None, device))

    for i in range(min(warmup, len(images))):
        forward(i)
    times = []
    for i in range(len(images)):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        forward(i)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.median(times))


def load_test_sets(params: Params, artifacts: str | Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Every client's test split: images (N, 3, S, S) float [0, 1], masks (N, C, Sm, Sm) float {0, 1}."""
    tests = {}
    for name in params.clients:
        ds = StoreDataset(ClientStore(store_path(artifacts, name)), "test")
        items = [ds[i] for i in range(len(ds))]
        tests[name] = (torch.stack([it["image"] for it in items]), torch.stack([it["mask"] for it in items]))
    return tests


def score_on_tests(model: Segmenter, tests: dict[str, tuple[torch.Tensor, torch.Tensor]], params: Params,
                   device: torch.device) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]], dict[str, torch.Tensor]]:
    """(summary per client, per-image metrics per client, logits per client) of ``model`` on ``tests``."""
    summaries, per_image, logits_by = {}, {}, {}
    for client, (images, masks) in tests.items():
        logits = _predict(model, images, device, masks)
        metrics = {k: v.numpy() for k, v in per_image_metrics(logits, masks, hd95=params.evaluate.hd95).items()}
        summaries[client] = _summary(metrics, list(params.data.classes), params.evaluate, params.seed)
        per_image[client], logits_by[client] = metrics, logits
    return summaries, per_image, logits_by


def source_mean(per_client: dict[str, Any], source: list[str]) -> dict[str, float]:
    """Mean over the source clients of their per-client means (Dice, IoU, HD95)."""
    src = [per_client[c] for c in source if c in per_client]
    with warnings.catch_warnings():  # HD95 is NaN where every mask or prediction is empty
        warnings.simplefilter("ignore", RuntimeWarning)
        return {k: float(np.nanmean([s[k] for s in src])) for k in ("dice", "iou", "hd95") if src and k in src[0]}


def _summary(per_image: dict[str, np.ndarray], classes: list[str], cfg: Any, seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {"n": int(len(per_image["dice"]))}
    for name, values in per_image.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            image_mean = np.nanmean(values, axis=1)  # mean over classes per image
            out[name] = float(np.nanmean(image_mean)) if len(values) else math.nan
            out[f"{name}_std"] = float(np.nanstd(image_mean)) if len(values) else math.nan
            for k, cls in enumerate(classes):
                out[f"{name}_{cls}"] = float(np.nanmean(values[:, k])) if len(values) else math.nan
        if name == "dice":
            out["dice_ci"] = list(bootstrap_ci(image_mean, cfg.bootstrap, cfg.ci, seed))
    return out


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return None if not math.isfinite(value) else round(value, 5)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def run_evaluate_stage(params: Params, artifacts: str | Path) -> dict[str, Any]:
    """Evaluate every available model; write ``artifacts/eval/{metrics.json, per_image.csv, predictions.npz}``.

    ``metrics.json`` (a DVC metric): per model, per client summaries, the source-client mean and the
    held-out client's, and the efficiency row. ``predictions.npz`` holds the first ``overlays`` test
    images of each client with every model's predicted masks, for the report's overlays.
    """
    cfg = params.evaluate
    artifacts = Path(artifacts)
    out = artifacts / "eval"
    classes = list(params.data.classes)
    device = pick_device(cfg.device)
    entries = available_models(params, artifacts)
    tests = load_test_sets(params, artifacts)
    source = params.training_clients
    holdout = params.data.holdout
    results: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    overlay: dict[str, np.ndarray] = {}
    timing_images = torch.cat([x for x, _ in tests.values()])[: cfg.timing_images]
    timing_masks = torch.cat([m for _, m in tests.values()])[: cfg.timing_images]
    for entry in entries:
        model = entry.load(params, device)
        per_client, per_image, logits_by = score_on_tests(model, tests, params, device)
        for client, metrics in per_image.items():
            for i in range(len(metrics["dice"])):
                rows.append({"model": entry.key, "client": client, "image": i,
                             **{f"{m}_{cls}": float(metrics[m][i, k]) for m in metrics for k, cls in enumerate(classes)}})
            if cfg.overlays:
                overlay[f"{entry.key}/{client}"] = (logits_by[client][: cfg.overlays] > 0).numpy().astype(np.uint8)
        means = source_mean(per_client, source)
        comm = sum(int(ledger_totals(p)["total"]) for p in entry.ledgers if p.is_file())
        efficiency = {"parameters": model.num_parameters(), "communication_bytes": comm,
                      "inference_ms_per_image": inference_ms(model, timing_images, device, masks=timing_masks), "note": entry.note}
        results[entry.key] = {"label": entry.label, "group": entry.group, "clients": per_client, "source_mean": means,
                              "holdout": per_client.get(holdout) if holdout else None, "efficiency": efficiency}
        log.info("evaluate: %-14s source Dice %.4f%s", entry.key, means.get("dice", math.nan),
                 f", held-out {per_client[holdout]['dice']:.4f}" if holdout else "")
        del model
    for client, (images, masks) in tests.items():
        overlay[f"image/{client}"] = (images[: cfg.overlays] * 255).round().to(torch.uint8).numpy()
        overlay[f"truth/{client}"] = masks[: cfg.overlays].numpy().astype(np.uint8)
    metrics_out = _clean({"classes": classes, "source_clients": source, "holdout": holdout, "device": str(device),
                          "ci": cfg.ci, "bootstrap": cfg.bootstrap, "order": list(results), "models": results})
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", metrics_out)
    write_csv(out / "per_image.csv", rows)
    with atomic_path(out / "predictions.npz", overwrite=True) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **overlay)
    return metrics_out
