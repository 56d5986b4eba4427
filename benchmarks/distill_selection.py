"""Benchmark: DSFedMed's learnability pool against training on every sample, at equal rounds and equal wall time.

Prints one JSON object. In a project that has run ``dvc repro`` up to ``distill``'s inputs (``server_sam``, the
student's federated folder, the synthetic sets), distils the demo's real models with SAM's image encoder frozen
and its embeddings cached (``distill.cache_embeddings``), in four runs from the same start:

- ``all``: every synthetic pair each round, ``--rounds`` rounds (the Table 4 ablation);
- ``pool``: DSFedMed's pool (``rate`` of the pairs, redrawn from the learnability scores each round), as many rounds;
- ``pool_equal_time``: the pool, round after round until it has used ``all``'s wall time;
- ``pool_uncached``: ``pool`` with the encoder run in every batch (the cache's saving; the same Dice to rounding).

Each run reports its wall time (scoring, training and the cache), and the student's Dice on the source clients'
real val and test splits and on the held-out client's test split (read here from the stores: a measurement,
which the pipeline's own stages make at the clients). No per-round validation, no guard: the last round's student.

Usage: ``python benchmarks/distill_selection.py --project CLONE [--rounds 4]``.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dsfed.config import load_params
from dsfed.data.dataset import StoreDataset
from dsfed.data.store import ClientStore
from dsfed.distill.rounds import DistillSettings, distill_round, embed_images
from dsfed.evaluation.metrics import evaluate, summarise
from dsfed.models.card import load_carded_model
from dsfed.server.finetune import freeze_image_encoder
from dsfed.stages.distill import _train_pairs, distill_settings
from dsfed.stages.federated import method_folder
from dsfed.stages.prepare import store_path
from dsfed.stages.server_sam import source_synthetic_stores


def _dice(model: torch.nn.Module, stores: dict[str, ClientStore], split: str, classes: list[str]) -> float:
    scores = [summarise(evaluate(model, StoreDataset(store, split)), classes)["dice"] for store in stores.values()]
    return round(float(np.mean(scores)), 4)


def run(name: str, sam0: torch.nn.Module, tiny0: torch.nn.Module, images: torch.Tensor, masks: torch.Tensor, settings: DistillSettings,
        rounds: int | None, budget_s: float | None, cache: bool, seed: int, lr: tuple[float, float]) -> tuple[dict[str, Any], torch.nn.Module]:
    """Distil fresh copies of the two models for ``rounds`` rounds, or until ``budget_s`` seconds are used."""
    sam, tiny = copy.deepcopy(sam0), copy.deepcopy(tiny0)
    freeze_image_encoder(sam)
    opt_s = torch.optim.Adam([p for p in sam.parameters() if p.requires_grad], lr=lr[0])
    opt_t = torch.optim.Adam(tiny.parameters(), lr=lr[1])
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    embeddings = embed_images(sam, images, settings.batch_size * 4) if cache else None
    cache_s = time.perf_counter() - start
    done, trained = 0, 0
    while (rounds is not None and done < rounds) or (budget_s is not None and time.perf_counter() - start < budget_s):
        result = distill_round(sam, tiny, opt_s, opt_t, images, masks, settings, generator, "cpu", embeddings)
        done += 1
        trained += len(result.pool)
    wall = time.perf_counter() - start
    return {"run": name, "selection": settings.selection, "rounds": done, "samples_trained": trained, "cached": cache,
            "wall_s": round(wall, 1), "cache_s": round(cache_s, 1)}, tiny


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    root = args.project.resolve()
    params = load_params(root / "params.yaml")
    artifacts = root / "artifacts"
    classes, size = list(params.data.classes), params.data.mask_size
    images, masks, _ = _train_pairs(source_synthetic_stores(params, artifacts))
    sam = load_carded_model(artifacts / "server_sam", len(classes), size)
    tiny = load_carded_model(method_folder(artifacts, params.distill.student), len(classes), size)
    sources = {n: ClientStore(store_path(artifacts, n)) for n in params.training_clients}
    held = {params.data.holdout: ClientStore(store_path(artifacts, params.data.holdout))} if params.data.holdout else {}
    base = distill_settings(params)
    pool = DistillSettings(**{**base.__dict__, "selection": "pool"})
    every = DistillSettings(**{**base.__dict__, "selection": "all"})
    lr = (params.distill.lr_sam, params.distill.lr_tiny)

    def scored(row: dict[str, Any], model: torch.nn.Module) -> dict[str, Any]:
        return {**row, "source_val_dice": _dice(model, sources, "val", classes), "source_test_dice": _dice(model, sources, "test", classes),
                "held_out_test_dice": _dice(model, held, "test", classes) if held else None}

    rows = [{"run": "undistilled", "rounds": 0, "wall_s": 0.0, **scored({}, tiny)}]
    all_row, model = run("all", sam, tiny, images, masks, every, args.rounds, None, True, params.seed, lr)
    rows.append(scored(all_row, model))
    row, model = run("pool", sam, tiny, images, masks, pool, args.rounds, None, True, params.seed, lr)
    rows.append(scored(row, model))
    row, model = run("pool_equal_time", sam, tiny, images, masks, pool, None, all_row["wall_s"], True, params.seed, lr)
    rows.append(scored(row, model))
    row, model = run("pool_uncached", sam, tiny, images, masks, pool, args.rounds, None, False, params.seed, lr)
    rows.append(scored(row, model))
    print(json.dumps({"benchmark": "distill_selection", "machine": platform.machine(), "threads": torch.get_num_threads(),
                      "torch": torch.__version__, "project": str(root), "synthetic_pairs": len(images), "rate": pool.rate,
                      "sam_encoder": "frozen", "runs": rows}, indent=2))


if __name__ == "__main__":
    main()
