"""``dsfed predict``, ``dsfed card`` and ``dsfed export``: a pipeline model segmenting new images, described, exported."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import typer

from dsfed.errors import DsfedError

__all__ = ["register"]


def predict(
    model: str = typer.Argument(..., help="A model name from the report's tables (fedtinysam, dsfedmed_tiny, server_sam...; "
                                          "dsfed-tinysam is the distilled student), a folder with model.json and model.safetensors, "
                                          "or a `dsfed export` folder (run with onnxruntime; no params file needed)."),
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
    from dsfed.deploy.export import OnnxSegmenter, is_export
    from dsfed.deploy.models import resolve_model
    from dsfed.deploy.predict import MaskFormat, collect_inputs, predict_images
    from dsfed.runtime import pick_device

    if mask_format not in ("per-class", "label"):
        raise DsfedError(f"--format {mask_format!r}: choose per-class or label")
    files = collect_inputs(inputs)
    fmt: MaskFormat = "label" if mask_format == "label" else "per-class"
    if is_export(Path(model)):   # an export folder describes itself: no params file needed
        runner = OnnxSegmenter(Path(model))
        spec = runner.spec
        typer.echo(f"predict: {spec['label']} (ONNX, {model}) on {len(files)} file(s), onnxruntime CPU")
        summary = predict_images(runner, files, out, list(spec["classes"]), int(spec["image_size"]), str(spec["resize"]),
                                 batch_size=batch_size, fmt=fmt)
    else:
        cfg = load_params(params)
        chosen = resolve_model(model, cfg, artifacts)
        torch_device = pick_device(device)
        segmenter = chosen.load(list(cfg.data.classes), cfg.data.mask_size, torch_device)
        typer.echo(f"predict: {chosen.label} ({chosen.entry.folder}) on {len(files)} file(s), {torch_device}")
        summary = predict_images(segmenter, files, out, list(cfg.data.classes), cfg.data.image_size, cfg.data.resize,
                                 batch_size=batch_size, fmt=fmt, device=torch_device)
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


def _refuse_foreign_folder(folder: Path) -> None:
    """One line when ``folder`` holds files and is not an earlier export (an export never writes over them)."""
    if folder.is_dir() and any(folder.iterdir()) and not (folder / "export.json").is_file():
        raise DsfedError(f"--out {folder}: the folder holds files and is not an earlier export (no export.json); "
                         "choose a new or empty folder (an export never writes over other files)")


def _echo_check(spec: dict[str, Any], graph: str, runtime: str, runtime_label: str) -> None:
    """The parity and timing lines of an export (``spec`` as ``export.json`` holds it)."""
    p, t = spec["parity"], spec["timing_ms_per_image"]
    typer.echo(f"parity on {p['images']} {p['images_from']} images: max |logit difference| {p['max_abs_logit_difference']:.2e}, "
               f"mask Dice PyTorch vs {graph} {p['mask_dice_pytorch_vs_export']:.5f}")
    typer.echo(f"batch-1 inference on this CPU: PyTorch {t['pytorch']:.1f} ms, {runtime_label} {t[runtime]:.1f} ms")


def export(
    model: str = typer.Argument(..., help="A model name from the report's tables (dsfed-tinysam is the distilled student) or a model folder."),
    fmt: str = typer.Option("onnx", "--format", help="onnx: model.onnx (dynamic batch) run by onnxruntime, with predict.py (no PyTorch "
                            "needed), export.json and the model card. bundle: a MONAI bundle (TorchScript models/model.ts, "
                            "configs/inference.json for `python -m monai.bundle run`, configs/metadata.json, the card in docs/)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Export folder (default: <artifacts>/exports/<model>-<format>)."),
    check_images: int = typer.Option(64, min=1, help="Test images (from the clients' stores under --artifacts) for the parity check and timings."),
    params: Path = typer.Option(Path("params.yaml"), "--params", "-p", help="Params file the model was trained with."),
    artifacts: Path = typer.Option(Path("artifacts"), "--artifacts", help="Artifacts root the model names refer to."),
) -> None:
    """Export MODEL for a hospital: the graph (ONNX, or a MONAI bundle with TorchScript weights), checked against
    PyTorch on the test images (largest logit difference, Dice between the two), timed at batch 1, with its model
    card. An earlier export in --out is replaced; any other non-empty folder is refused."""
    from dsfed.config import load_params
    from dsfed.deploy.card import build_card, write_card
    from dsfed.deploy.export_run import run_export
    from dsfed.deploy.models import resolve_model

    if fmt not in ("onnx", "bundle"):
        raise DsfedError(f"--format {fmt!r}: choose onnx or bundle")
    if out is not None:
        _refuse_foreign_folder(out)   # before any loading: a wrong -o costs nothing
    cfg = load_params(params)
    chosen = resolve_model(model, cfg, artifacts)
    folder = out or artifacts / "exports" / f"{chosen.entry.key}-{fmt}"
    _refuse_foreign_folder(folder)
    if fmt == "bundle":
        from dsfed.deploy.export_run import run_bundle_export

        card = build_card(chosen, cfg, params, artifacts)
        spec = run_bundle_export(chosen, cfg, artifacts, folder, check_images, card)
        write_card(card, folder / "docs")
        shutil.copyfile(folder / "docs" / "MODEL_CARD.md", folder / "docs" / "README.md")
        typer.echo(f"export: MONAI bundle {folder} (TorchScript {spec['torchscript_bytes'] / 1e6:.1f} MB)")
        _echo_check(spec, "TorchScript", "torchscript", "TorchScript")
        typer.echo(f"run it: cd {folder} && {spec['usage']}")
        return
    spec = run_export(chosen, cfg, artifacts, folder, check_images)
    write_card(build_card(chosen, cfg, params, artifacts), folder)
    typer.echo(f"export: {folder} ({spec['onnx_bytes'] / 1e6:.1f} MB)")
    _echo_check(spec, "ONNX", "onnxruntime", "onnxruntime")
    typer.echo(f"without PyTorch or dsfed, at the hospital: cd {folder} && {spec['runner']['usage']}")


def register(app: typer.Typer) -> None:
    """Add ``predict``, ``card`` and ``export`` to the ``dsfed`` app."""
    app.command("predict")(predict)
    app.command("card")(card)
    app.command("export")(export)
