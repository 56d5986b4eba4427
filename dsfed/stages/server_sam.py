"""The ``server_sam`` stage, at the server: fine-tune the foundation SAM on the source clients' synthetic sets
(``artifacts/synthetic/<client>``; the server never opens ``artifacts/clients``, and the held-out client never
takes part) into ``artifacts/server_sam/``, keeping the epoch the source clients' real validation prefers (they
score the weights they receive on their own val splits; only metrics come back); and the models it declares: the
foundation SAM it starts from (zero-shot, when it is a dsfed segmenter file) and the fine-tuned server SAM."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsfed.stages.producers import ModelEntry
from dsfed.timings import record_measured

if TYPE_CHECKING:
    from dsfed.config import Params
    from dsfed.data.store import ClientStore
    from dsfed.federated.ledger import Ledger
    from dsfed.models import Segmenter
    from dsfed.stages.client_validation import ClientValidation, Connect

__all__ = ["foundation_kept", "generation_ledgers", "produced_models", "run_server_sam_stage", "server_sam_ledger", "server_sam_metrics",
           "source_synthetic_stores"]


def source_synthetic_stores(params: Params, artifacts: str | Path) -> dict[str, ClientStore]:
    """The synthetic store of every training client (the held-out client's is never opened)."""
    from dsfed.data.store import ClientStore
    from dsfed.stages.synthesize import synthetic_path

    return {name: ClientStore(synthetic_path(artifacts, name)) for name in params.training_clients}


def generation_ledgers(params: Params, artifacts: Path) -> list[Path]:
    """DSFedMed's generation traffic: each source client's uploads and its audit download."""
    names = params.training_clients
    return [artifacts / "generators" / c / "ledger.csv" for c in names] + [artifacts / "quality" / c / "audit_ledger.csv" for c in names]


def server_sam_ledger(artifacts: Path) -> Path:
    """The weights the epoch selection sent to the source clients and the metrics they sent back."""
    return Path(artifacts) / "server_sam" / "ledger.csv"


def _real_scorer(params: Params, artifacts: Path, ledger: Ledger,
                 connect: Connect | None = None) -> tuple[Callable[[int, Segmenter], float], ClientValidation]:
    """``score(epoch, model)``: the source clients' mean real val Dice of the model's weights (sent through an
    engine: in process, or ``connect``'s)."""
    from dsfed.models.card import architecture
    from dsfed.runtime import pick_device
    from dsfed.stages.client_validation import ClientValidation

    cfg = params.server_sam
    validation = ClientValidation(params, artifacts, params.training_clients, ledger, "server_sam", pick_device(cfg.device),
                                  {"server_sam": architecture(cfg.model, cfg.input_size)}, connect=connect)

    def score(epoch: int, model: Segmenter) -> float:
        return float(validation.score(epoch, model, "server_sam")["val_dice"])

    return score, validation


def _zero_shot_ready(params: Params, checkpoint: Path) -> bool:
    """A dsfed segmenter's own weights (with a class head, unlike an official SAM checkpoint) whose head has the
    task's classes: a head re-initialised at load has never been trained, so its row would measure nothing."""
    from dsfed.heads import head_fits

    return head_fits(checkpoint, list(params.data.classes))


def server_sam_metrics(artifacts: Path) -> dict[str, Any]:
    """The stage's ``metrics.json`` (empty before it ran)."""
    path = Path(artifacts) / "server_sam" / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def foundation_kept(metrics: dict[str, Any]) -> bool:
    """True when the stage fine-tuned at least one epoch and kept the foundation (epoch 0) over all of them."""
    return metrics.get("selected_epoch") == 0 and len(metrics.get("history", [])) > 1


def _server_sam_label(artifacts: Path) -> str:
    """The server SAM's row label: which epoch became the teacher, once the stage has run."""
    metrics = server_sam_metrics(artifacts)
    if foundation_kept(metrics):
        return f"SAM before distillation (the foundation: {metrics.get('select', 'synthetic')} validation kept it over the synthetic fine-tune)"
    return "SAM before distillation (synthetic fine-tune)"


def produced_models(params: Params, artifacts: Path) -> list[ModelEntry]:
    """The foundation's zero-shot row (when :func:`_zero_shot_ready`) and the server SAM."""
    entries = []
    cfg = params.server_sam
    if _zero_shot_ready(params, cfg.checkpoint):
        entries.append(ModelEntry("foundation", "Foundation SAM (pre-trained, zero-shot)", artifacts, "dsfedmed", [],
                                  "released weights, no client data", checkpoint=cfg.checkpoint, build=(cfg.model, cfg.input_size)))
    entries.append(ModelEntry("server_sam", _server_sam_label(artifacts), artifacts / "server_sam", "dsfedmed",
                              [*generation_ledgers(params, artifacts), server_sam_ledger(artifacts)], "server only"))
    return entries


def run_server_sam_stage(params: Params, artifacts: str | Path, progress: bool = True, connect: Connect | None = None,
                         params_path: str | Path | None = None) -> dict[str, Any]:
    """Fine-tune, then write ``artifacts/server_sam``: ``model.safetensors`` + ``model.json`` (the selected
    epoch), ``metrics.json`` (a DVC metric), ``dvclive/`` (per-epoch loss, synthetic and real val Dice) and,
    with ``select: real``, ``ledger.csv`` (the weights sent to the source clients, the metrics they returned).

    ``connect``: how the clients are reached (a Flower ServerApp's). None: in this process, or, with
    ``select: real`` and ``federated.engine`` flower or simulation, the stage runs as a ServerApp task
    (``params_path`` needed) whose nodes validate."""
    if connect is None and params.server_sam.select == "real" and params.federated.engine != "inprocess":
        from dsfed.stages.federated_outputs import run_server_stage_on_engine

        run_server_stage_on_engine(params, params_path, "server_sam", Path(artifacts))
        return server_sam_metrics(Path(artifacts))
    from dsfed.federated.ledger import Ledger
    from dsfed.io import sha256_file, write_json
    from dsfed.server.finetune import finetune_server_sam
    from dsfed.server.outputs import save_model, write_curve

    cfg = params.server_sam
    artifacts = Path(artifacts)
    out = artifacts / "server_sam"
    out.mkdir(parents=True, exist_ok=True)
    partial = out / ".ledger.csv.partial"
    partial.unlink(missing_ok=True)
    scorer, validation = _real_scorer(params, artifacts, Ledger(partial), connect) if cfg.select == "real" else (None, None)
    try:
        run = finetune_server_sam(params, source_synthetic_stores(params, artifacts), progress, real_score=scorer)
    finally:
        if validation is not None:
            validation.close()
    save_model(out, run.model, cfg.model, cfg.input_size, selected_epoch=run.selected_epoch)
    if cfg.select == "real":
        os.replace(partial, server_sam_ledger(artifacts))
    write_curve(out / "dvclive", run.history, step="epoch")
    metrics = {
        "model": cfg.model,
        "parameters": run.model.num_parameters(),
        "start": {"checkpoint": str(cfg.checkpoint) if cfg.checkpoint else None,
                  "sha256": sha256_file(cfg.checkpoint) if cfg.checkpoint else None},
        "encoder_frozen": cfg.freeze_encoder,
        "train_samples": run.train_samples,
        "selected_epoch": run.selected_epoch,
        "select": cfg.select,
        "synthetic_val_dice": {"foundation": run.history[0]["val_dice_mean"],
                               "selected": run.history[run.selected_epoch]["val_dice_mean"]},
        "real_val_dice": {"foundation": run.history[0].get("real_val_dice"),
                          "selected": run.history[run.selected_epoch].get("real_val_dice"),
                          "clients": params.training_clients} if cfg.select == "real" else None,
        "history": run.history,
    }
    write_json(out / "metrics.json", metrics)
    # the wall time is a measurement of this machine: the timings log, not the hashed metrics
    record_measured(artifacts, "server_sam", {"wall_s": round(run.wall_s, 2), "device": str(next(run.model.parameters()).device)})
    return metrics
