"""Flow of the ``prepare@<client>`` stage: one client's data into ``artifacts/clients/<client>/data.zarr``."""

from __future__ import annotations

import typer
from prefect import flow

from dsfed_pipeline.flows._cli import run_flow
from dsfed_pipeline.tasks.prepare import build_store, publish_summary


@flow(name="prepare", log_prints=True)
def prepare(client: str, params: str = "params.yaml", artifacts: str = "artifacts", overwrite: bool = False) -> str:
    """Build the client's store (runs at the client: its images never leave it) and publish a summary."""
    path = build_store(client, params, artifacts, overwrite)
    publish_summary(path)
    return path


def main(
    client: str = typer.Argument(..., help="Client name from params.yaml `clients:`."),
    params: str = typer.Option("params.yaml", help="Params file."),
    artifacts: str = typer.Option("artifacts", help="Artifacts root; the store goes to <root>/clients/<client>/data.zarr."),
    overwrite: bool = typer.Option(False, help="Replace an existing store built from different inputs."),
) -> None:
    """Run the prepare flow for CLIENT (what `dvc repro prepare@CLIENT` runs)."""
    run_flow(prepare, client, params, artifacts, overwrite)


if __name__ == "__main__":
    typer.run(main)
