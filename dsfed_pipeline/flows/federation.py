"""Flow of the ``federation`` stage: the roster of client stores the ``federated@<method>`` stages read.

Each federated stage depends on ``artifacts/federation/roster.json`` (the federation's store hashes), not on
``artifacts/clients``: a client that joins outside a pinned ``federated.clients`` leaves it unchanged, so
DVC keeps every federated model (docs/DESIGN.md: "Issue 6").
"""

from __future__ import annotations

import typer
from prefect import flow

from dsfed_pipeline.flows._cli import run_flow
from dsfed_pipeline.tasks.federated import publish_roster, write_federation_roster


@flow(name="federation", log_prints=True)
def federation(params: str = "params.yaml", artifacts: str = "artifacts") -> str:
    """Hash the federation's client stores into the roster; publish it as a table."""
    path = write_federation_roster(params, artifacts)
    publish_roster(path)
    return path


def main(
    params: str = typer.Option("params.yaml", help="Params file."),
    artifacts: str = typer.Option("artifacts", help="Artifacts root (stores in <root>/clients, the roster in <root>/federation)."),
) -> None:
    """Write artifacts/federation/roster.json (what `dvc repro federation` runs)."""
    run_flow(federation, params, artifacts)


if __name__ == "__main__":
    typer.run(main)
