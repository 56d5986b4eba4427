"""The ``distill`` stage: mutual distillation of the server SAM and the federated student on synthetic sets.

The server reads ``artifacts/server_sam``, the student's federated weights and the source clients'
synthetic stores (train split to learn from, val split for the synthetic curve). It never opens
``artifacts/clients``: every round both models go to the source clients, which score them on their own
real val splits and send back numbers (:class:`~dsfed.stages.client_validation.ClientValidation`, every
payload in the ledger). Those numbers select what ships (the guard, :mod:`dsfed.distill.guard`); the
held-out client takes no part.

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
from dsfed.distill.guard import GuardChoice, TeacherCheck, best_round, choose, teacher_check
from dsfed.distill.rounds import DistillSettings, RoundResult
from dsfed.distill.run import latest_round, run_distillation
from dsfed.errors import DsfedError
from dsfed.federated.ledger import Ledger
from dsfed.federated.validator import DEPLOYED_MODEL
from dsfed.io import atomic_path, sha256_file, write_csv, write_json
from dsfed.models.card import card_architecture, load_carded_model
from dsfed.provenance import DISTILL_CODE, code_hash
from dsfed.runtime import pick_device
from dsfed.server.finetune import freeze_image_encoder, synthetic_val_dice
from dsfed.server.outputs import save_model, write_curve
from dsfed.stages.client_validation import ClientValidation, Connect
from dsfed.stages.federated import LABELS, method_folder
from dsfed.stages.producers import ModelEntry
from dsfed.stages.server_sam import generation_ledgers, server_sam_ledger, source_synthetic_stores
from dsfed.timings import record_measured

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
    # imported here: the module imports diffusers, which evaluate and report (importing this one) do not need
    from dsfed.generation.client import read_pairs

    images, masks, origin = [], [], []
    for name, store in stores.items():
        rows = store.split("train")
        im, m = read_pairs(store, rows)
        images.append(im)
        masks.append(m)
        origin += [(name, int(r)) for r in rows]
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(masks)), origin


def _curve(scores: dict[str, dict[str, float]], stem: str) -> dict[int, float]:
    """``{round: score}`` of one model from ``{"<round>": {"sam": ..., "tiny": ...}}``."""
    return {int(r): v[stem] for r, v in scores.items()}


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


def _load_snapshot(model: torch.nn.Module, path: Path) -> None:
    model.load_state_dict(torch.load(path, weights_only=True))


def _snapshot(model: torch.nn.Module, path: Path) -> None:
    with atomic_path(path, overwrite=True) as tmp:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)


def run_distill_stage(params: Params, artifacts: str | Path, out: str | Path | None = None, connect: Connect | None = None,
                      params_path: str | Path | None = None) -> dict[str, Any]:
    """Distil, select each model on the clients' real validation (the guard), write ``artifacts/distill``.

    Writes ``sam/model.*`` and ``tiny/model.*`` (the guarded models: a distilled round only if it beats the
    model before distillation on the source clients' real val splits), ``unguarded/{sam,tiny}/model.*``
    (selected on synthetic validation alone, as DSFedMed's code does),
    ``metrics.json`` (a DVC metric), ``rounds.csv`` (per round and sample: score and pool membership),
    ``dvclive/``, and ``ledger.csv`` (the validation payloads and the student sent down to every client).
    ``connect``: how the clients are reached (a Flower ServerApp's). None: in this process (each keeps the
    delivered student under ``checkpoints/<run>/received/<client>/``), or, with ``federated.engine`` flower or
    simulation, the stage runs as a ServerApp task (``params_path`` needed) whose nodes validate and receive.

    Returns:
        the metrics JSON.
    """
    cfg = params.distill
    if cfg.student not in params.federated.methods:
        raise DsfedError(f"distill.student: no federated method named {cfg.student!r} (have: {', '.join(params.federated.methods)})")
    artifacts = Path(artifacts)
    out = Path(out) if out is not None else artifacts / "distill"
    if connect is None and params.federated.engine != "inprocess":
        from dsfed.stages.federated_outputs import run_server_stage_on_engine

        if out != artifacts / "distill":
            raise DsfedError(f"distill: federated.engine {params.federated.engine} writes artifacts/distill only (asked for {out})")
        run_server_stage_on_engine(params, params_path, "distill", artifacts)
        return dict(json.loads((out / "metrics.json").read_text()))
    classes = list(params.data.classes)
    device = pick_device(cfg.device)
    stores = source_synthetic_stores(params, artifacts)
    images, masks, origin = _train_pairs(stores)
    settings = distill_settings(params)
    folders = {"sam": artifacts / "server_sam", "tiny": method_folder(artifacts, cfg.student)}
    models = {stem: load_carded_model(folder, len(classes), params.data.mask_size, device=device) for stem, folder in folders.items()}
    sam, tiny = models["sam"], models["tiny"]

    settings_hash = _hash({"distill": cfg.model_dump(mode="json", exclude={"device", "warm_start"}), "seed": params.seed,
                           "pos_weight": settings.pos_weight, "code": code_hash(*DISTILL_CODE)})  # a code edit: afresh, no warm start
    inputs = {stem: sha256_file(folder / "model.safetensors") for stem, folder in folders.items()}
    inputs["data"] = hashlib.sha256(images.numpy().tobytes() + masks.numpy().tobytes()).hexdigest()
    run_hash = _hash({"settings": settings_hash, "inputs": inputs})
    root = out / "checkpoints"
    work = root / run_hash
    done = latest_round(work)
    work.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(work / "ledger.csv")
    ledger.truncate_after(done)  # a round redone after a crash is recorded once
    validation = ClientValidation(params, artifacts, params.training_clients, ledger, run_hash, device,
                                  {stem: card_architecture(folder) for stem, folder in folders.items()}, connect=connect,
                                  received=work / "received")
    real_path = work / "real_val.json"
    real: dict[str, Any] = json.loads(real_path.read_text()) if real_path.exists() else {"rounds": {}}

    def score(round: int) -> dict[str, dict[str, float]]:
        """Both models as they are now, scored at the clients (mean and per-client real val Dice)."""
        return {stem: validation.score(round, model, stem) for stem, model in models.items()}

    if "undistilled" not in real:  # the models as distillation receives them
        real["undistilled"] = score(0)
        write_json(real_path, real)
    check = teacher_check(real["undistilled"]["sam"]["val_dice"], real["undistilled"]["tiny"]["val_dice"])
    if check.weaker:
        log.warning("distill: the teacher is weaker than its student on the source clients' real validation "
                    "(SAM %.4f < %s %.4f): DSFedMed's premise fails; %s", check.teacher_val_dice, cfg.student,
                    check.student_val_dice, "skipping distillation (weak_teacher: skip)" if cfg.weak_teacher == "skip"
                    else "distilling anyway, the guard keeps the better model (weak_teacher: distill)")
    rounds = 0 if check.weaker and cfg.weak_teacher == "skip" else cfg.rounds

    warm_from = None
    if done == 0 and rounds:
        source = _warm_source(root, run_hash, settings_hash, inputs["tiny"], cfg.rounds) if cfg.warm_start else None
        if source is not None:
            sam.load_state_dict(load_file(str(source / "sam.safetensors")))
            tiny.load_state_dict(load_file(str(source / "tiny.safetensors")))
            warm_from = str(source.relative_to(out))
            log.info("distill: warm start from %s", warm_from)
            real["rounds"]["0"] = {stem: m["val_dice"] for stem, m in score(0).items()}
            for stem, model in models.items():
                _snapshot(model, work / f"{stem}-real-best.pt")
            write_json(real_path, real)
    write_json(work / "run.json", {"settings_hash": settings_hash, "inputs": inputs, "warm_from": warm_from})

    frozen = freeze_image_encoder(sam) if cfg.freeze_sam_encoder else 0
    sam_opt = torch.optim.Adam([p for p in sam.parameters() if p.requires_grad], lr=cfg.lr_sam)
    tiny_opt = torch.optim.Adam(tiny.parameters(), lr=cfg.lr_tiny)
    start = {"sam": synthetic_val_dice(sam, stores, classes)["mean"], "tiny": synthetic_val_dice(tiny, stores, classes)["mean"]}
    log.info("distill: before, synthetic val Dice SAM %.4f, %s %.4f; real val Dice SAM %.4f, %s %.4f", start["sam"], cfg.student,
             start["tiny"], check.teacher_val_dice, cfg.student, check.student_val_dice)
    val_path = work / "val.json"
    val_curve: dict[str, dict[str, float]] = json.loads(val_path.read_text()) if val_path.exists() else {}

    def on_round(round: int, result: RoundResult) -> None:
        val_curve[str(round)] = {"sam": synthetic_val_dice(sam, stores, classes)["mean"], "tiny": synthetic_val_dice(tiny, stores, classes)["mean"]}
        write_json(val_path, val_curve)
        real["rounds"][str(round)] = {stem: m["val_dice"] for stem, m in score(round).items()}
        write_json(real_path, real)
        for stem, model in models.items():  # one snapshot per model and criterion: its best round so far
            if best_round(_curve(val_curve, stem)) == round:
                _snapshot(model, work / f"{stem}-best.pt")
            if best_round(_curve(real["rounds"], stem)) == round:
                _snapshot(model, work / f"{stem}-real-best.pt")
        in_pool = set(result.pool.tolist())
        rows = [{"round": round, "client": c, "row": r, "score": float(result.scores[i]), "in_pool": int(i in in_pool)}
                for i, (c, r) in enumerate(origin)]
        write_csv(work / f"rounds-{round:04d}.csv", rows)  # kept with the checkpoints: a resumed run still has them
        log.info("distill: round %d, pool %d, val Dice synthetic / real: SAM %.4f / %.4f, %s %.4f / %.4f", round, len(result.pool),
                 val_curve[str(round)]["sam"], real["rounds"][str(round)]["sam"], cfg.student, val_curve[str(round)]["tiny"],
                 real["rounds"][str(round)]["tiny"])

    t0 = time.perf_counter()
    history = run_distillation(sam, tiny, sam_opt, tiny_opt, images, masks, settings, rounds, seed=params.seed,
                               work=work, run=run_hash, keep=2, on_round=on_round, device=device,
                               cache_embeddings=cfg.cache_embeddings) if rounds else []
    wall = time.perf_counter() - t0
    guard = {stem: choose(real["undistilled"][stem]["val_dice"], _curve(real["rounds"], stem)) for stem in models}
    synthetic_round = {stem: best_round(_curve(val_curve, stem)) for stem in models}
    for stem, model in models.items():
        choice = guard[stem]
        card = json.loads((folders[stem] / "model.json").read_text())
        input_size = card.get("options", {}).get("input_size")
        if choice.kept_undistilled:
            model.load_state_dict(load_file(str(folders[stem] / "model.safetensors")))
        else:
            _load_snapshot(model, work / f"{stem}-real-best.pt")
        save_model(out / stem, model, card["model"], input_size, selected_round=choice.round, selected_by="client validation",
                   kept=choice.source)
        # the paper's code selects on synthetic validation alone: kept as the unguarded models
        if synthetic_round[stem] is None:
            model.load_state_dict(load_file(str(folders[stem] / "model.safetensors")))
        else:
            _load_snapshot(model, work / f"{stem}-best.pt")
        save_model(out / "unguarded" / stem, model, card["model"], input_size, selected_round=synthetic_round[stem],
                   selected_by="synthetic validation")
    verdict = _verdict(guard["tiny"], check, cfg.student, rounds)
    (log.warning if guard["tiny"].kept_undistilled else log.info)("distill: %s", verdict)
    for stale in root.glob("*"):
        if stale != work:
            shutil.rmtree(stale, ignore_errors=True)

    try:   # every client (the held-out one too) receives the student it deploys
        taken = validation.deliver(0, DEPLOYED_MODEL, (out / "tiny" / "model.safetensors").read_bytes())
    finally:
        validation.close()
    refused = sorted(name for name, ok in taken.items() if not ok)
    if refused:
        log.warning("distill: %s could not take the distilled student (see the lines above)", ", ".join(refused))
    with atomic_path(out / "ledger.csv", overwrite=True) as tmp:  # validation traffic, then the student sent to every client
        shutil.copyfile(ledger.path, tmp)
    rows = [{"round": 0, "val_dice_sam": start["sam"], "val_dice_tiny": start["tiny"],
             "real_val_dice_sam": real["rounds"].get("0", {}).get("sam", check.teacher_val_dice),
             "real_val_dice_tiny": real["rounds"].get("0", {}).get("tiny", check.student_val_dice)}]
    for record in history:
        r = str(record["round"])
        rows.append({**record, "val_dice_sam": val_curve[r]["sam"], "val_dice_tiny": val_curve[r]["tiny"],
                     "real_val_dice_sam": real["rounds"][r]["sam"], "real_val_dice_tiny": real["rounds"][r]["tiny"]})
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
        "teacher": {**check.as_dict(), "action": "distilled" if rounds else "skipped"},
        "guard": {stem: choice.as_dict() for stem, choice in guard.items()},
        "verdict": verdict,
        "real_val_dice": {"clients": params.training_clients, "undistilled": real["undistilled"]},
        "synthetic_val_dice": {
            "before": start,
            "selected_round": synthetic_round,
            "selected": {stem: val_curve[str(r)][stem] if r is not None else start[stem] for stem, r in synthetic_round.items()},
        },
        "rounds": rows,
    }
    write_json(out / "metrics.json", metrics)
    record_measured(artifacts, "distill", {"wall_s": round(wall, 2), "rounds": rounds})  # a measurement: not hashed
    return metrics


def _verdict(choice: GuardChoice, check: TeacherCheck, student: str, rounds: int) -> str:
    """One sentence for the log and the report: what shipped and why, with the figures."""
    teacher = (f"the teacher (SAM, real val Dice {check.teacher_val_dice:.3f}) was weaker than the student "
               f"({check.student_val_dice:.3f}) before distillation" if check.weaker else
               f"the teacher (SAM, real val Dice {check.teacher_val_dice:.3f}) was stronger than the student "
               f"({check.student_val_dice:.3f}) before distillation")
    if not rounds:
        return f"{teacher}; distillation was skipped (weak_teacher: skip) and {student} ships as it is"
    if choice.kept_undistilled:
        return (f"{teacher}; no distilled round beat the undistilled {student} on the source clients' real validation "
                f"(best round {choice.best_round}: {choice.best_val_dice:.3f} vs {choice.undistilled_val_dice:.3f}), "
                f"so {student} ships undistilled")
    return (f"{teacher}; distilled round {choice.round} beat the undistilled {student} on the source clients' real "
            f"validation ({choice.val_dice:.3f} vs {choice.undistilled_val_dice:.3f}) and ships")


def produced_models(params: Params, artifacts: Path) -> list[ModelEntry]:
    student = params.distill.student
    generation = generation_ledgers(params, artifacts)
    folder = artifacts / "distill"
    label = f"DSFedMed {LABELS.get(student, student).removeprefix('Fed')}"
    ledgers = [method_folder(artifacts, student) / "ledger.csv", *generation, server_sam_ledger(artifacts), folder / "ledger.csv"]
    return [
        ModelEntry("dsfedmed_tiny", label, folder / "tiny", "dsfedmed", ledgers, "selected on the clients' real validation"),
        ModelEntry("dsfedmed_tiny_unguarded", f"{label} (unguarded)", folder / "unguarded" / "tiny", "dsfedmed", ledgers,
                   "selected on synthetic validation (the paper's code)"),
        ModelEntry("dsfedmed_sam", "DSFedMed SAM", folder / "sam", "dsfedmed", generation, "server only"),
    ]
