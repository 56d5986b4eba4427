"""Tasks of the ``federated@<method>`` stage: run the method's rounds, write its outputs, publish a table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_table_artifact

from dsfed.config import load_params
from dsfed.federated.experiment import run_method
from dsfed.federated.report import write_method_outputs


@task(name="federated-rounds")
def train_method(method: str, params_path: str, artifacts: str) -> dict[str, Any]:
    """Run the rounds (resuming from the method's checkpoints) and write its outputs; returns the metrics."""
    params = load_params(params_path)
    if method not in params.federated.methods:
        from dsfed.errors import DsfedError

        raise DsfedError(f"federated.methods.{method}: no such method (have: {', '.join(params.federated.methods)})")
    out = Path(artifacts) / "federated" / method
    run = run_method(params, method, artifacts, out)
    return write_method_outputs(run, out)


@task(name="publish-method-metrics")
def publish_metrics(metrics: dict[str, Any]) -> None:
    """A table artifact: test Dice / IoU per client (held-out client marked)."""
    rows = [
        {"client": f"{client}{' (held out)' if client == metrics['holdout'] else ''}", "dice": m.get("dice"), "iou": m.get("iou")}
        for client, m in metrics["test"].items()
    ]
    create_table_artifact(
        key=f"federated-{metrics['method']}".lower().replace("_", "-"),
        table=rows,
        description=f"{metrics['method']}: {metrics['model']} ({metrics['strategy']}), round {metrics['selected_round']} selected on validation",
    )
