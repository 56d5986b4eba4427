"""Tasks of the SAM-Fed stage set: each calls one ``dsfed.stages.samfed`` runner (torch imported on use)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_table_artifact

from dsfed.config import load_params


@task(name="samfed-prepare")
def prepare_client(client: str, params_path: str, artifacts: str, overwrite: bool = False) -> str:
    """Build the SAM-Fed client's store (at the client) under ``<artifacts>/samfed/clients/<client>/``."""
    from dsfed.stages.samfed import run_samfed_prepare

    return str(run_samfed_prepare(load_params(params_path), client, artifacts, root=Path(params_path).parent, overwrite=overwrite))


@task(name="samfed-public")
def prepare_public(params_path: str, artifacts: str, overwrite: bool = False) -> str:
    """Build the server's labelled public store."""
    from dsfed.stages.samfed import run_samfed_public

    return str(run_samfed_public(load_params(params_path), artifacts, root=Path(params_path).parent, overwrite=overwrite))


@task(name="samfed-teacher")
def train_teacher(params_path: str, artifacts: str) -> dict[str, Any]:
    """LoRA-SAM on the public set; the adapter is what clients receive."""
    from dsfed.stages.samfed import run_samfed_teacher

    return run_samfed_teacher(load_params(params_path), artifacts)


@task(name="samfed-init")
def train_init(architecture: str, params_path: str, artifacts: str) -> dict[str, Any]:
    """The supervised global model of one client architecture on the public set."""
    from dsfed.stages.samfed import run_samfed_init

    return run_samfed_init(load_params(params_path), architecture, artifacts)


@task(name="samfed-rounds")
def train_variant(variant: str, params_path: str, artifacts: str) -> dict[str, Any]:
    """The variant's federated rounds (resuming from its checkpoints); writes its model and metrics."""
    from dsfed.stages.samfed import run_samfed_variant

    return run_samfed_variant(load_params(params_path), variant, artifacts, params_path=params_path)


@task(name="samfed-evaluate")
def evaluate_all(params_path: str, artifacts: str) -> dict[str, Any]:
    """Every SAM-Fed model on every SAM-Fed client's test split."""
    from dsfed.stages.samfed import run_samfed_evaluate

    return run_samfed_evaluate(load_params(params_path), artifacts)


@task(name="publish-samfed-metrics")
def publish_variant(metrics: dict[str, Any]) -> None:
    """A table artifact: the variant's test Dice per client."""
    rows = [{"client": client, "dice": m.get("dice"), "iou": m.get("iou")} for client, m in metrics["test"].items()]
    create_table_artifact(key=f"samfed-{metrics['variant']}".lower().replace("_", "-"), table=rows,
                          description=f"SAM-Fed variant {metrics['variant']}: round {metrics['selected_round']} selected on the public val split")
