"""``dsfed pretrain``, ``pretrain-sam`` and ``pretrain-tinysam``: the project's own "released weights"."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from dsfed.errors import DsfedError

__all__ = ["register"]

TASKS_HELP = "Comma-separated public phantom tasks of the corpus: fundus, skin, polyp."


def _device(device: str) -> str:
    from dsfed.runtime import pick_device  # CUDA when present; deterministic kernels on the CPU

    return str(pick_device(device))


def _tasks(tasks: str) -> tuple[str, ...]:
    from dsfed.generation.corpus import CORPUS_TASKS

    names = tuple(t.strip() for t in tasks.split(",") if t.strip())
    unknown = [t for t in names if t not in CORPUS_TASKS]
    if unknown or not names:
        raise DsfedError(f"--tasks {tasks!r}: choose from {', '.join(CORPUS_TASKS)}")
    return names


def pretrain(
    out: Path = typer.Argument(Path("data/pretrained/embedded"), help="Folder to write: backbone/, controlnet.safetensors, pretrain.json, losses.json, grid.png."),
    spec: Path | None = typer.Option(None, "--spec", help="YAML with any of: backbone, backbone_train, controlnet_train, sampler, grid_n, eval_n (fields of dsfed.generation.settings)."),
    corpus_n: int = typer.Option(2000, min=1, help="Public phantom samples per task to train on (site 'public', no client's data)."),
    tasks: str = typer.Option("fundus,skin,polyp", help=TASKS_HELP + " The backbone learns one prompt per task."),
    init: Path | None = typer.Option(None, "--init", help="A released-weights folder (backbone/, controlnet.safetensors) to warm-start from; same architecture."),
    device: str = typer.Option("auto", help="cpu, cuda, or auto (CUDA when present)."),
    workers: int | None = typer.Option(None, min=0, help="Processes rendering the corpus (default: all CPUs but one)."),
    overwrite: bool = typer.Option(False, help="Replace OUT if it exists (the shipped weights are data/pretrained/embedded)."),
) -> None:
    """Train the embedded diffusion backbone (one learned prompt per task) and the generic, class-agnostic mask ControlNet (the project's own "released weights")."""
    from pydantic import ValidationError

    from dsfed.config import ConfigError, format_validation_error, read_yaml
    from dsfed.generation.pretrain import pretrain as run_pretrain
    from dsfed.generation.settings import PretrainSpec

    try:
        settings = PretrainSpec.model_validate(read_yaml(spec) or {}) if spec else PretrainSpec()
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc), source=str(spec)) from exc
    if out.exists() and not overwrite:
        raise DsfedError(f"{out}: already exists (pass --overwrite to replace it)")
    summary = run_pretrain(
        out, corpus_n=corpus_n, backbone_spec=settings.backbone, backbone_train=settings.backbone_train,
        controlnet_train=settings.controlnet_train, sampler=settings.sampler, device=_device(device), workers=workers,
        grid_n=settings.grid_n, eval_n=settings.eval_n, overwrite=overwrite, tasks=_tasks(tasks), init=init,
    )
    typer.echo(json.dumps({"out": str(out), "checks": summary["checks"], "final_loss": summary["final_loss"]}, indent=2))


def _foundation(out: Path, overwrite: bool, device: str, workers: int, **fields: object) -> None:
    from dsfed.server.foundation import FoundationSpec, pretrain_foundation

    try:
        summary = pretrain_foundation(out, FoundationSpec(**fields), device=_device(device), workers=workers, overwrite=overwrite)  # type: ignore[arg-type]
    except FileExistsError as exc:
        raise DsfedError(str(exc)) from None
    typer.echo(json.dumps({"out": str(out), "best_val_dice": summary["best_val_dice"], "timings": summary["timings"]}, indent=2))


OUT = typer.Argument(Path("data/pretrained/embedded"), help="Folder to write <model>.safetensors (fp16) and <model>.json into.")
DEVICE = typer.Option("auto", help="cpu, cuda, or auto (CUDA when present).")
WORKERS = typer.Option(1, min=0, help="Processes rendering the corpus.")
OVERWRITE = typer.Option(False, help="Replace existing weights (the shipped ones are data/pretrained/embedded).")


def pretrain_sam(
    out: Path = OUT,
    model: str = typer.Option("sam_demo", help="Server model preset to pre-train (a registered model name)."),
    tasks: str = typer.Option("fundus,skin,polyp", help=TASKS_HELP),
    corpus_n: int = typer.Option(1200, min=1, help="Public phantom samples per task (site 'public' of each task, no client's data)."),
    val_n: int = typer.Option(64, min=1, help="Further public samples per task for picking the best epoch."),
    epochs: int = typer.Option(3, min=1, help="Passes over the corpus."),
    batch_size: int = typer.Option(8, min=1, help="Training batch size."),
    lr: float = typer.Option(3e-4, min=0, help="AdamW learning rate (cosine decay over the epochs)."),
    device: str = DEVICE, workers: int = WORKERS, overwrite: bool = OVERWRITE,
) -> None:
    """Pre-train the embedded default's foundation SAM on the multi-task public phantom corpus (the project's "released" SAM)."""
    _foundation(out, overwrite, device, workers, model=model, tasks=_tasks(tasks), corpus_n=corpus_n, val_n=val_n,
                epochs=epochs, batch_size=batch_size, lr=lr)


def pretrain_tinysam(
    out: Path = OUT,
    teacher: Path = typer.Option(Path("data/pretrained/embedded/sam_demo.safetensors"), help="The foundation SAM to distil (from `dsfed pretrain-sam`)."),
    model: str = typer.Option("tinysam_demo", help="Student preset (a registered model name)."),
    input_size: int = typer.Option(128, min=16, help="The student's input side (FedTinySAM's)."),
    tasks: str = typer.Option("fundus,skin,polyp", help=TASKS_HELP),
    corpus_n: int = typer.Option(1200, min=1, help="Public phantom samples per task."),
    val_n: int = typer.Option(64, min=1, help="Further public samples per task for picking the best epoch."),
    epochs: int = typer.Option(3, min=1, help="Passes over the corpus."),
    kd_weight: float = typer.Option(1.0, min=0, help="Weight of matching the teacher's probabilities (0: labels only)."),
    device: str = DEVICE, workers: int = WORKERS, overwrite: bool = OVERWRITE,
) -> None:
    """Distil the foundation SAM into the TinySAM student on the public corpus (TinySAM is itself distilled from SAM)."""
    if not teacher.is_file():
        raise DsfedError(f"--teacher {teacher}: no such file (run `dsfed pretrain-sam` first)")
    _foundation(out, overwrite, device, workers, model=model, tasks=_tasks(tasks), corpus_n=corpus_n, val_n=val_n,
                epochs=epochs, input_size=input_size, teacher=str(teacher), kd_weight=kd_weight)


def register(app: typer.Typer) -> None:
    """Add the three commands to the ``dsfed`` app."""
    app.command("pretrain")(pretrain)
    app.command("pretrain-sam")(pretrain_sam)
    app.command("pretrain-tinysam")(pretrain_tinysam)
