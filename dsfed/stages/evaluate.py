"""The ``evaluate`` stage: every produced model on every client's test split; ``artifacts/eval/``.

The models come from the producer registry (:mod:`dsfed.stages.producers`): a model whose stage has not run
is skipped, and a method adds its rows by registering a producer. Writes ``metrics.json`` (a DVC metric),
``per_image.csv`` and ``predictions.npz`` (the report's overlays).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dsfed.config import Params
from dsfed.evaluation.cache import ScoreCache, tensor_digest
from dsfed.evaluation.suite import (
    clean_floats,
    flops_per_image,
    inference_ms,
    load_test_sets,
    score_client,
    source_mean,
    summarise_client,
)
from dsfed.federated.ledger import ledger_totals
from dsfed.io import write_csv, write_json, write_npz
from dsfed.runtime import pick_device
from dsfed.stages.prepare import store_path
from dsfed.stages.producers import ModelEntry, produced_models
from dsfed.timings import record_measured

__all__ = ["run_evaluate_stage", "test_stores"]

log = logging.getLogger(__name__)


def test_stores(params: Params, artifacts: Path) -> dict[str, Path]:
    """Every client's store (each is scored on its test split)."""
    return {name: store_path(artifacts, name) for name in params.clients}


def run_evaluate_stage(params: Params, artifacts: str | Path, entries: list[ModelEntry] | None = None, stage: str = "evaluate",
                       timings_root: str | Path | None = None) -> dict[str, Any]:
    """Evaluate every available model; write ``artifacts/eval/{metrics.json, per_image.csv, predictions.npz}``.

    ``metrics.json``: per model, per client summaries, the source-client mean and the held-out client's,
    and the efficiency row: parameters, communication, GFLOPs per image (``entries``: these models instead of the
    producer registry's; SAM-Fed's task passes its own). The measured batch-1 latency per model is recorded under
    ``stage`` in ``<timings_root or artifacts>/timings.jsonl``, not in the hashed outputs (for a model read from the
    score cache, ``eval/cache``: :mod:`dsfed.evaluation.cache`, its latency when first scored). ``predictions.npz``
    holds the first ``overlays`` test images of each client with every model's predicted masks, for the report's
    overlays.
    """
    cfg = params.evaluate
    artifacts = Path(artifacts)
    out = artifacts / "eval"
    classes = list(params.data.classes)
    device = pick_device(cfg.device)
    entries = produced_models(params, artifacts) if entries is None else [e for e in entries if e.available]
    tests = load_test_sets(test_stores(params, artifacts))
    source = params.training_clients
    holdout = params.data.holdout
    results: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    overlay: dict[str, np.ndarray] = {}
    latency: dict[str, float] = {}
    timing_images = torch.cat([x for x, _ in tests.values()])[: cfg.timing_images]
    timing_masks = torch.cat([m for _, m in tests.values()])[: cfg.timing_images]
    cache = ScoreCache(out / "cache", {"classes": classes, "mask_size": params.data.mask_size, "device": str(device),
                                       "evaluate": cfg.model_dump(mode="json", exclude={"device"}), "seed": params.seed,
                                       "timing": tensor_digest(timing_images, timing_masks)})
    client_keys = {client: tensor_digest(images, masks) for client, (images, masks) in tests.items()}
    scored = 0
    for entry in entries:
        key = cache.model_key([entry.checkpoint] if entry.checkpoint is not None else [entry.folder / "model.safetensors",
                                                                                        entry.folder / "model.json"], entry.build)
        model = None
        per_client: dict[str, Any] = {}
        for client, (images, masks) in tests.items():
            hit = cache.get(key, client_keys[client])
            if hit is None:
                model = model if model is not None else entry.load(classes, params.data.mask_size, device)
                metrics, logits = score_client(model, images, masks, params, device)
                hit = (metrics, (logits[: cfg.overlays] > 0).numpy().astype(np.uint8))
                cache.put(key, client_keys[client], *hit)
                scored += 1
            metrics, masks_out = hit
            per_client[client] = summarise_client(metrics, params)
            for i in range(len(metrics["dice"])):
                rows.append({"model": entry.key, "client": client, "image": i,
                             **{f"{m}_{cls}": float(metrics[m][i, k]) for m in metrics for k, cls in enumerate(classes)}})
            if cfg.overlays:
                overlay[f"{entry.key}/{client}"] = masks_out
        means = source_mean(per_client, source)
        comm = sum(int(ledger_totals(p)["total"]) for p in entry.ledgers if p.is_file())
        cost = cache.get_model(key)
        if cost is None:   # deterministic cost in the hashed metrics; the measured latency goes to the timings log
            model = model if model is not None else entry.load(classes, params.data.mask_size, device)
            cost = {"parameters": model.num_parameters(), "gflops_per_image": flops_per_image(model, timing_images, masks=timing_masks) / 1e9,
                    "latency_ms": round(inference_ms(model, timing_images, device, masks=timing_masks), 3)}
            cache.put_model(key, cost)
        efficiency = {"parameters": cost["parameters"], "communication_bytes": comm, "gflops_per_image": cost["gflops_per_image"],
                      "note": entry.note}
        latency[entry.key] = cost["latency_ms"]   # measured when the model was first scored
        results[entry.key] = {"label": entry.label, "group": entry.group, "clients": per_client, "source_mean": means,
                              "holdout": per_client.get(holdout) if holdout else None, "efficiency": efficiency}
        log.info("evaluate: %-14s source Dice %.4f%s%s", entry.key, means.get("dice", math.nan),
                 f", held-out {per_client[holdout]['dice']:.4f}" if holdout else "", "" if model is not None else " (cached)")
        del model
    cache.prune()
    log.info("evaluate: %d of %d (model, client) scores computed, the rest read from %s", scored, len(entries) * len(tests), cache.root)
    for client, (images, masks) in tests.items():
        overlay[f"image/{client}"] = (images[: cfg.overlays] * 255).round().to(torch.uint8).numpy()
        overlay[f"truth/{client}"] = masks[: cfg.overlays].numpy().astype(np.uint8)
    metrics_out = clean_floats({"classes": classes, "source_clients": source, "holdout": holdout, "device": str(device),
                                "ci": cfg.ci, "bootstrap": cfg.bootstrap, "order": list(results), "models": results})
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", metrics_out)
    write_csv(out / "per_image.csv", rows)
    write_npz(out / "predictions.npz", overlay)
    record_measured(timings_root if timings_root is not None else artifacts, stage,
                    {"device": str(device), "inference_ms_per_image": latency})
    return metrics_out
