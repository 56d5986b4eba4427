"""Tasks of the ``federated@<method>`` stage: run the method's rounds, write its outputs, publish a table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_table_artifact

from dsfed.config import load_params
from dsfed_pipeline.tasks import transient_io


@task(name="federated-rounds")
def train_method(method: str, params_path: str, artifacts: str) -> dict[str, Any]:
    """Run the rounds (resuming from the method's checkpoints) and write its outputs; returns the metrics."""
    from dsfed.stages.federated_outputs import train_method as run_and_write  # torch: by the training task only

    params = load_params(params_path)
    if method not in params.federated.methods:
        from dsfed.errors import DsfedError

        raise DsfedError(f"federated.methods.{method}: no such method (have: {', '.join(params.federated.methods)})")
    return run_and_write(params, Path(params_path), method, Path(artifacts))


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


@task(name="write-federation-roster", retries=2, retry_delay_seconds=2, retry_condition_fn=transient_io)
def write_federation_roster(params_path: str, artifacts: str) -> str:
    """Hash the federation's stores into ``<artifacts>/federation/roster.json``; returns its path.

    Retried on I/O errors only (a store still being copied in); a missing store fails at once.
    """
    from dsfed.stages.federation import write_roster

    return str(write_roster(load_params(params_path), artifacts))


@task(name="publish-roster")
def publish_roster(path: str) -> list[dict[str, str]]:
    """Publish the roster as a table artifact (client, role, store hash); returns the rows."""
    import json

    roster = json.loads(Path(path).read_text())
    rows = [{"client": name, "role": entry["role"], "store_sha256": entry["store_sha256"][:16]}
            for name, entry in roster["clients"].items()]
    pinned = "pinned by federated.clients" if roster["pinned"] else "every client (federated.clients: null)"
    create_table_artifact(key="federation-roster", table=rows, description=f"The federation, {pinned}")
    return rows
