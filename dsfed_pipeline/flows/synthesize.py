"""Flow of the ``synthesize@<client>`` stage (runs at the server): a synthetic set from the client's uploads."""

from __future__ import annotations

import typer
from prefect import flow

from dsfed_pipeline.flows._cli import run_flow
from dsfed_pipeline.tasks.generation import publish_table, synthesize


@flow(name="synthesize", log_prints=True)
def synthesize_flow(client: str, params: str = "params.yaml", artifacts: str = "artifacts") -> dict[str, object]:
    """Sample image/mask pairs from the client's uploaded ControlNet and masks (its store is never read) into
    ``<artifacts>/synthetic/<client>/data.zarr``."""
    summary = synthesize(client, params, artifacts)
    if not summary.get("held_out"):
        rows = [{k: summary[k] for k in ("client", "n", "uploaded_masks", "augmented", "seconds", "images_per_s", "device")}]
        publish_table(["synthesize", client], rows, f"{client}: synthetic set")
    return summary


def main(
    client: str = typer.Argument(..., help="Client name from params.yaml `clients:`."),
    params: str = typer.Option("params.yaml", help="Params file (section `synthesize`)."),
    artifacts: str = typer.Option("artifacts", help="Artifacts root; the set goes to <root>/synthetic/<client>/data.zarr."),
) -> None:
    """Run the synthesize flow for CLIENT (what `dvc repro synthesize@CLIENT` runs)."""
    run_flow(synthesize_flow, client, params, artifacts)


if __name__ == "__main__":
    typer.run(main)
