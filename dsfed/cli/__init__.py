"""The ``dsfed`` command line (typer): configuration checks, client stores, previews."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from dsfed.errors import DsfedError

app = typer.Typer(
    name="dsfed",
    help="Federated segmentation with a foundation model and lightweight clients (DSFedMed, SAM-Fed).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
config_app = typer.Typer(help="Check and inspect params.yaml.", no_args_is_help=True)
data_app = typer.Typer(help="Inspect client stores.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(data_app, name="data")

PARAMS = typer.Option(Path("params.yaml"), "--params", "-p", help="Params file.")
ARTIFACTS = typer.Option(Path("artifacts"), "--artifacts", help="Artifacts root.")


@config_app.command("validate")
def config_validate(
    params: Path = typer.Argument(Path("params.yaml"), help="Params file to check."),
    check_paths: bool = typer.Option(True, help="Also check that every client's source path exists."),
) -> None:
    """Validate a params file: unknown keys, bad values, duplicate clients, missing paths (one line each)."""
    from dsfed.config import load_params

    cfg = load_params(params, check_paths=check_paths)
    holdout = f", held out: {cfg.data.holdout}" if cfg.data.holdout else ""
    typer.echo(f"{params}: OK ({len(cfg.clients)} clients: {', '.join(cfg.clients)}{holdout})")


@config_app.command("dump")
def config_dump(params: Path = typer.Argument(Path("params.yaml"), help="Params file to read.")) -> None:
    """Print the params with every default filled in (DVC needs each key a stage lists to be in the file)."""
    import yaml

    from dsfed.config import load_params

    typer.echo(yaml.safe_dump(load_params(params).model_dump(mode="json"), sort_keys=False), nl=False)


@app.command("prepare")
def prepare(
    client: str = typer.Argument(..., help="Client name from `clients:`."),
    params: Path = PARAMS,
    artifacts: Path = ARTIFACTS,
    overwrite: bool = typer.Option(False, help="Replace an existing store built from different inputs."),
) -> None:
    """Build one client's Zarr store without Prefect or DVC (the pipeline runs `dvc repro prepare`)."""
    from dsfed.config import load_params
    from dsfed.data.store import build_client_store, store_path

    cfg = load_params(params)
    out = build_client_store(cfg, client, store_path(artifacts, client), root=params.parent, overwrite=overwrite)
    typer.echo(str(out))


@app.command("pretrain")
def pretrain(
    out: Path = typer.Argument(Path("data/pretrained/embedded"), help="Folder to write: backbone/, controlnet.safetensors, pretrain.json, losses.json, grid.png."),
    spec: Path | None = typer.Option(None, "--spec", help="YAML with any of: backbone, backbone_train, controlnet_train, sampler, grid_n, eval_n (fields of dsfed.generation.settings)."),
    corpus_n: int = typer.Option(8000, min=1, help="Public phantom samples to train on (site 'public', no client's data)."),
    device: str = typer.Option("auto", help="cpu, cuda, or auto (CUDA when present)."),
    workers: int | None = typer.Option(None, min=0, help="Processes rendering the corpus (default: all CPUs but one)."),
    overwrite: bool = typer.Option(False, help="Replace OUT if it exists (the shipped weights are data/pretrained/embedded)."),
) -> None:
    """Train the embedded diffusion backbone and generic mask ControlNet (the project's own "released weights")."""
    import torch
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
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    summary = run_pretrain(
        out, corpus_n=corpus_n, backbone_spec=settings.backbone, backbone_train=settings.backbone_train,
        controlnet_train=settings.controlnet_train, sampler=settings.sampler, device=device, workers=workers,
        grid_n=settings.grid_n, eval_n=settings.eval_n, overwrite=overwrite,
    )
    typer.echo(json.dumps({"out": str(out), "disc_offset": summary["disc_offset"], "final_loss": summary["final_loss"]}, indent=2))


def _open(target: str, artifacts: Path):  # noqa: ANN202 - returns ClientStore (imported lazily)
    from dsfed.data.store import ClientStore, store_path

    path = Path(target)
    return ClientStore(path if path.suffix == ".zarr" else store_path(artifacts, target))


@data_app.command("show")
def data_show(
    targets: list[str] = typer.Argument(None, help="Client names, or paths to .zarr stores (default: every client in params)."),
    params: Path = PARAMS,
    artifacts: Path = ARTIFACTS,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Summarise client stores: samples per split, sizes, foreground fraction per class."""
    from rich.console import Console
    from rich.table import Table

    from dsfed.config import load_params
    from dsfed.data.summary import store_summary

    targets = targets or list(load_params(params).clients)
    rows = [store_summary(_open(t, artifacts))["table"][0] for t in targets]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(*rows[0].keys())
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    Console(width=None if sys.stdout.isatty() else 160).print(table)


@data_app.command("preview")
def data_preview(
    targets: list[str] = typer.Argument(..., help="Client names, or paths to .zarr stores."),
    out: Path = typer.Option(Path("artifacts/preview.png"), "--out", "-o", help="PNG to write."),
    artifacts: Path = ARTIFACTS,
    per_client: int = typer.Option(8, help="Samples per client row."),
) -> None:
    """Write a PNG grid: a row of samples per client, mask outlines drawn in colour per class."""
    from dsfed.data.summary import preview_grid

    typer.echo(str(preview_grid([_open(t, artifacts) for t in targets], out, per_store=per_client)))


def main() -> None:
    """Entry point: user errors print as one ``error: ...`` line per problem and exit 2."""
    import logging

    from dsfed.config import ConfigError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")

    try:
        app()
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {exc.source}: {problem}", file=sys.stderr)
        sys.exit(2)
    except DsfedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
