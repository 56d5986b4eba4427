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
from dsfed.evaluation.suite import (
    clean_floats,
    flops_per_image,
    inference_ms,
    load_test_sets,
    score_on_tests,
    source_mean,
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
    ``stage`` in ``<timings_root or artifacts>/timings.jsonl``, not in the hashed outputs. ``predictions.npz``
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
    for entry in entries:
        model = entry.load(classes, params.data.mask_size, device)
        per_client, per_image, logits_by = score_on_tests(model, tests, params, device)
        for client, metrics in per_image.items():
            for i in range(len(metrics["dice"])):
                rows.append({"model": entry.key, "client": client, "image": i,
                             **{f"{m}_{cls}": float(metrics[m][i, k]) for m in metrics for k, cls in enumerate(classes)}})
            if cfg.overlays:
                overlay[f"{entry.key}/{client}"] = (logits_by[client][: cfg.overlays] > 0).numpy().astype(np.uint8)
        means = source_mean(per_client, source)
        comm = sum(int(ledger_totals(p)["total"]) for p in entry.ledgers if p.is_file())
        # deterministic cost in the hashed metrics; the measured latency goes to the timings log (dsfed.timings)
        efficiency = {"parameters": model.num_parameters(), "communication_bytes": comm,
                      "gflops_per_image": flops_per_image(model, timing_images, masks=timing_masks) / 1e9, "note": entry.note}
        latency[entry.key] = round(inference_ms(model, timing_images, device, masks=timing_masks), 3)
        results[entry.key] = {"label": entry.label, "group": entry.group, "clients": per_client, "source_mean": means,
                              "holdout": per_client.get(holdout) if holdout else None, "efficiency": efficiency}
        log.info("evaluate: %-14s source Dice %.4f%s", entry.key, means.get("dice", math.nan),
                 f", held-out {per_client[holdout]['dice']:.4f}" if holdout else "")
        del model
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
