"""Flow of the ``federated@<method>`` stage: a model trained over the clients' real data by a strategy."""

from __future__ import annotations

import typer
from prefect import flow

from dsfed_pipeline.flows._cli import run_flow
from dsfed_pipeline.tasks.federated import publish_metrics, train_method


@flow(name="federated", log_prints=True)
def federated(method: str, params: str = "params.yaml", artifacts: str = "artifacts") -> dict[str, object]:
    """Federated rounds (clients train locally, only weights travel), model selection, test metrics."""
    metrics = train_method(method, params, artifacts)
    publish_metrics(metrics)
    return metrics


def main(
    method: str = typer.Argument(..., help="Method name from params.yaml `federated.methods`."),
    params: str = typer.Option("params.yaml", help="Params file."),
    artifacts: str = typer.Option("artifacts", help="Artifacts root (stores in <root>/clients, outputs in <root>/federated/<method>)."),
) -> None:
    """Run the federated flow for METHOD (what `dvc repro federated@METHOD` runs); resumes after a crash."""
    run_flow(federated, method, params, artifacts)


if __name__ == "__main__":
    typer.run(main)
