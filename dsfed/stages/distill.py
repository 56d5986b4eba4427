"""The ``distill`` stage: mutual distillation of the server SAM and the federated student on synthetic sets.

Server side only: it reads ``artifacts/server_sam``, the student's federated weights and the source
clients' synthetic stores (train split to learn from, val split to select rounds), never
``artifacts/clients`` and never the held-out client's store.

Checkpoints live in ``artifacts/distill/checkpoints/<run hash>/`` (a DVC ``persist`` output), so a
killed run resumes. The run hash covers the settings and the inputs. Warm start: when ``warm_start`` is
on and an earlier *completed* run with the same settings and the same federated student is there, but
other synthetic sets or server SAM (a client joined), both models start from its final weights.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from dsfed.config import Params
from dsfed.data.store import ClientStore
from dsfed.distill.rounds import DistillSettings, RoundResult
from dsfed.distill.run import latest_round, run_distillation
from dsfed.federated.ledger import Ledger
from dsfed.generation.client import read_pairs
from dsfed.io import atomic_path, sha256_file, write_csv, write_json
from dsfed.models.card import load_carded_model
from dsfed.provenance import DISTILL_CODE, code_hash
from dsfed.runtime import pick_device
from dsfed.server.finetune import freeze_image_encoder, synthetic_val_dice
from dsfed.server.outputs import save_model, write_curve
from dsfed.stages.federated import LABELS, method_folder
from dsfed.stages.producers import ModelEntry
from dsfed.stages.server_sam import generation_ledgers, source_synthetic_stores

__all__ = ["distill_settings", "produced_models", "run_distill_stage"]

log = logging.getLogger(__name__)


def distill_settings(params: Params) -> DistillSettings:
    """The round settings from ``params.distill`` (the BCE pos_weight is the training loss's)."""
    cfg = params.distill
    return DistillSettings(
        lam=cfg.lam, temperature=cfg.temperature, tau=cfg.tau, rate=cfg.rate, selection=cfg.selection, mutual=cfg.mutual,
        w_gt=cfg.w_gt, w_kl=cfg.w_kl, batch_size=cfg.batch_size, pos_weight=params.federated.loss.pos_weight,
        quantile=cfg.quantile, keep=cfg.keep,
    )


def _hash(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _train_pairs(stores: dict[str, ClientStore]) -> tuple[torch.Tensor, torch.Tensor, list[tuple[str, int]]]:
    """Every source client's synthetic train pairs: images (N,3,S,S) uint8, masks (N,K,Sm,Sm) uint8, and
    (client, store row) per sample."""
    images, masks, origin = [], [], []
    for name, store in stores.items():
        rows = store.split("train")
        im, m = read_pairs(store, rows)
        images.append(im)
        masks.append(m)
        origin += [(name, int(r)) for r in rows]
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(masks)), origin


def _best_round(val_curve: dict[str, dict[str, float]], stem: str) -> int:
    """The round with the best synthetic val Dice for ``stem`` (the earliest on ties)."""
    return max((int(r) for r in val_curve), key=lambda r: (val_curve[str(r)][stem], -r))


def _warm_source(root: Path, run_hash: str, settings_hash: str, student_sha: str, rounds: int) -> Path | None:
    """The final round folder of the latest completed earlier run with the same settings and the same
    student (None when there is none): after a second client joins, the models distilled after the first.

    A client joining changes the synthetic sets and so the server SAM, never the federated student: that
    case warm-starts. A retrained student (or other settings) starts from scratch, so the distilled
    models never hide a newer student.
    """
    runs = [f for f in root.glob("*") if f.name != run_hash and (f / "run.json").is_file()]
    for folder in sorted(runs, key=lambda f: (f / "run.json").stat().st_mtime, reverse=True):  # the latest first
        info = json.loads((folder / "run.json").read_text())
        same = info.get("settings_hash") == settings_hash and info.get("inputs", {}).get("tiny") == student_sha
        if same and latest_round(folder) == rounds:
            return folder / f"round-{rounds:04d}"
    return None


def run_distill_stage(params: Params, artifacts: str | Path, out: str | Path | None = None) -> dict[str, Any]:
    """Distil, select each model's best round on the synthetic val splits, write ``artifacts/distill``.

    Writes ``sam/model.*`` and ``tiny/model.*`` (selected weights + cards), ``metrics.json`` (a DVC
    metric), ``rounds.csv`` (per round and sample: score and pool membership), ``dvclive/``, and
    ``ledger.csv`` (the distilled student sent down to every client).

    Returns:
        the metrics JSON.
    """
    cfg = params.distill
    if cfg.student not in params.federated.methods:
        from dsfed.errors import DsfedError

        raise DsfedError(f"distill.student: no federated method named {cfg.student!r} (have: {', '.join(params.federated.methods)})")
    artifacts = Path(artifacts)
    out = Path(out) if out is not None else artifacts / "distill"
    classes = list(params.data.classes)
    device = pick_device(cfg.device)
    stores = source_synthetic_stores(params, artifacts)
    images, masks, origin = _train_pairs(stores)
    settings = distill_settings(params)
    sam_dir, tiny_dir = artifacts / "server_sam", method_folder(artifacts, cfg.student)
    sam = load_carded_model(sam_dir, len(classes), params.data.mask_size, device=device)
    tiny = load_carded_model(tiny_dir, len(classes), params.data.mask_size, device=device)

    settings_hash = _hash({"distill": cfg.model_dump(mode="json", exclude={"device", "warm_start"}), "seed": params.seed,
                           "pos_weight": settings.pos_weight, "code": code_hash(*DISTILL_CODE)})  # a code edit: afresh, no warm start
    inputs = {"sam": sha256_file(sam_dir / "model.safetensors"), "tiny": sha256_file(tiny_dir / "model.safetensors"),
              "data": hashlib.sha256(images.numpy().tobytes() + masks.numpy().tobytes()).hexdigest()}
    run_hash = _hash({"settings": settings_hash, "inputs": inputs})
    root = out / "checkpoints"
    work = root / run_hash
    warm_from = None
    if latest_round(work) == 0:
        source = _warm_source(root, run_hash, settings_hash, inputs["tiny"], cfg.rounds) if cfg.warm_start else None
        if source is not None:
            sam.load_state_dict(load_file(str(source / "sam.safetensors")))
            tiny.load_state_dict(load_file(str(source / "tiny.safetensors")))
            warm_from = str(source.relative_to(out))
            log.info("distill: warm start from %s", warm_from)
    work.mkdir(parents=True, exist_ok=True)
    write_json(work / "run.json", {"settings_hash": settings_hash, "inputs": inputs, "warm_from": warm_from})

    frozen = freeze_image_encoder(sam) if cfg.freeze_sam_encoder else 0
    sam_opt = torch.optim.Adam([p for p in sam.parameters() if p.requires_grad], lr=cfg.lr_sam)
    tiny_opt = torch.optim.Adam(tiny.parameters(), lr=cfg.lr_tiny)
    start = {"sam": synthetic_val_dice(sam, stores, classes)["mean"], "tiny": synthetic_val_dice(tiny, stores, classes)["mean"]}
    log.info("distill: before, synthetic val Dice SAM %.4f, %s %.4f", start["sam"], cfg.student, start["tiny"])
    val_path = work / "val.json"
    val_curve: dict[str, dict[str, float]] = json.loads(val_path.read_text()) if val_path.exists() else {}

    def on_round(round: int, result: RoundResult) -> None:
        val_curve[str(round)] = {"sam": synthetic_val_dice(sam, stores, classes)["mean"], "tiny": synthetic_val_dice(tiny, stores, classes)["mean"]}
        write_json(val_path, val_curve)
        for stem, model in (("sam", sam), ("tiny", tiny)):
            if _best_round(val_curve, stem) == round:  # keep one snapshot per model: its best round so far
                with atomic_path(work / f"{stem}-best.pt", overwrite=True) as tmp:
                    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
        in_pool = set(result.pool.tolist())
        rows = [{"round": round, "client": c, "row": r, "score": float(result.scores[i]), "in_pool": int(i in in_pool)}
                for i, (c, r) in enumerate(origin)]
        write_csv(work / f"rounds-{round:04d}.csv", rows)  # kept with the checkpoints: a resumed run still has them
        log.info("distill: round %d, pool %d, synthetic val Dice SAM %.4f, %s %.4f", round, len(result.pool),
                 val_curve[str(round)]["sam"], cfg.student, val_curve[str(round)]["tiny"])

    t0 = time.perf_counter()
    history = run_distillation(sam, tiny, sam_opt, tiny_opt, images, masks, settings, cfg.rounds, seed=params.seed,
                               work=work, run=run_hash, keep=2, on_round=on_round, device=device)
    wall = time.perf_counter() - t0
    selected = {}
    for stem, model, src in (("sam", sam, sam_dir), ("tiny", tiny, tiny_dir)):
        best = _best_round(val_curve, stem)
        model.load_state_dict(torch.load(work / f"{stem}-best.pt", weights_only=True))
        selected[stem] = best
        card = json.loads((src / "model.json").read_text())
        save_model(out / stem, model, card["model"], card.get("options", {}).get("input_size"), selected_round=best)
    for stale in root.glob("*"):
        if stale != work:
            shutil.rmtree(stale, ignore_errors=True)

    with atomic_path(out / "ledger.csv", overwrite=True) as tmp:  # the distilled student goes down to every client
        ledger = Ledger(tmp)
        ledger.ensure()
        for client in params.clients:
            ledger.record(0, client, "down", "distilled_model", (out / "tiny" / "model.safetensors").stat().st_size)
    rows = [{"round": 0, "val_dice_sam": start["sam"], "val_dice_tiny": start["tiny"]}]
    for record in history:
        rows.append({**record, "val_dice_sam": val_curve[str(record["round"])]["sam"], "val_dice_tiny": val_curve[str(record["round"])]["tiny"]})
    write_curve(out / "dvclive", rows, step="round")
    per_sample: list[dict[str, Any]] = []
    for part in sorted(work.glob("rounds-*.csv")):
        with open(part, newline="") as fh:
            per_sample += list(csv.DictReader(fh))
    write_csv(out / "rounds.csv", per_sample)
    metrics = {
        "student": cfg.student,
        "settings": {k: v for k, v in cfg.model_dump(mode="json").items() if k != "device"},
        "train_samples": len(images),
        "pool_size": history[-1]["pool_size"] if history else 0,
        "sam_encoder_frozen_parameters": frozen,
        "warm_start_from": warm_from,
        "selected_round": selected,
        "synthetic_val_dice": {
            "before": start,
            "selected": {stem: val_curve[str(selected[stem])][stem] for stem in ("sam", "tiny")},
        },
        "rounds": rows,
        "wall_s": round(wall, 2),
    }
    write_json(out / "metrics.json", metrics)
    return metrics


def produced_models(params: Params, artifacts: Path) -> list[ModelEntry]:
    student = params.distill.student
    generation = generation_ledgers(params, artifacts)
    folder = artifacts / "distill"
    return [
        ModelEntry("dsfedmed_tiny", f"DSFedMed {LABELS.get(student, student).removeprefix('Fed')}", folder / "tiny", "dsfedmed",
                   [method_folder(artifacts, student) / "ledger.csv", *generation, folder / "ledger.csv"]),
        ModelEntry("dsfedmed_sam", "DSFedMed SAM", folder / "sam", "dsfedmed", generation, "server only"),
    ]
