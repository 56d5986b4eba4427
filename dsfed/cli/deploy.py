"""``dsfed predict`` and ``dsfed card``: segment new images with a model the pipeline produced, and describe it."""

from __future__ import annotations

from pathlib import Path

import typer

from dsfed.errors import DsfedError

__all__ = ["register"]


def predict(
    model: str = typer.Argument(..., help="A model name from the report's tables (fedtinysam, dsfedmed_tiny, server_sam...; "
                                          "dsfed-tinysam is the distilled student) or a folder with model.json and model.safetensors."),
    inputs: list[Path] = typer.Argument(..., help="Image files and/or folders of images (.png, .jpg, .jpeg, .bmp, .tif, .tiff)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for <image>_<class>.png masks (or <image>_label.png) and <image>_overlay.png."),
    mask_format: str = typer.Option("per-class", "--format", help="per-class: one 0/255 PNG per class; label: one PNG, 0 background, k+1 for class k."),
    batch_size: int = typer.Option(8, min=1, help="Images per forward pass."),
    device: str = typer.Option("auto", help="cpu, cuda, or auto (CUDA when present)."),
    params: Path = typer.Option(Path("params.yaml"), "--params", "-p", help="Params file: classes, image size and resize mode of the task."),
    artifacts: Path = typer.Option(Path("artifacts"), "--artifacts", help="Artifacts root the model names refer to."),
) -> None:
    """Segment images with MODEL: masks and overlays at each image's own resolution (prepare's resize undone).
    An unreadable image gets one line and the run goes on; the last line says how many were segmented."""
    from dsfed.config import load_params
    from dsfed.deploy.models import resolve_model
    from dsfed.deploy.predict import collect_inputs, predict_images
    from dsfed.runtime import pick_device

    if mask_format not in ("per-class", "label"):
        raise DsfedError(f"--format {mask_format!r}: choose per-class or label")
    cfg = load_params(params)
    files = collect_inputs(inputs)
    chosen = resolve_model(model, cfg, artifacts)
    torch_device = pick_device(device)
    segmenter = chosen.load(list(cfg.data.classes), cfg.data.mask_size, torch_device)
    typer.echo(f"predict: {chosen.label} ({chosen.entry.folder}) on {len(files)} file(s), {torch_device}")
    summary = predict_images(segmenter, files, out, list(cfg.data.classes), cfg.data.image_size, cfg.data.resize,
                             batch_size=batch_size, fmt="label" if mask_format == "label" else "per-class", device=torch_device)
    typer.echo(summary.line(out))
    if not summary.segmented:
        raise typer.Exit(1)


def card(
    model: str = typer.Argument(..., help="A model name from the report's tables (dsfed-tinysam is the distilled student) or a model folder."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Folder for model_card.json and MODEL_CARD.md (default: <artifacts>/cards/<model>)."),
    params: Path = typer.Option(Path("params.yaml"), "--params", "-p", help="Params file the model was trained with."),
    artifacts: Path = typer.Option(Path("artifacts"), "--artifacts", help="Artifacts root the model names refer to."),
) -> None:
    """Write MODEL's card: what it is, the input it expects, how it was trained, its test results per client with
    intervals (the held-out client apart), cost, intended use and limits, provenance (commit, hashes, date)."""
    from dsfed.config import load_params
    from dsfed.deploy.card import build_card, write_card
    from dsfed.deploy.models import resolve_model

    cfg = load_params(params)
    chosen = resolve_model(model, cfg, artifacts)
    paths = write_card(build_card(chosen, cfg, params, artifacts), out or artifacts / "cards" / chosen.entry.key)
    typer.echo("\n".join(str(p) for p in paths))


def register(app: typer.Typer) -> None:
    """Add ``predict`` and ``card`` to the ``dsfed`` app."""
    app.command("predict")(predict)
    app.command("card")(card)
