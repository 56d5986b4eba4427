"""Tasks of the generation stages: backbone, controlnet@<client>, synthesize@<client>, quality@<client>.

Each task takes and returns paths and small summaries (never tensors); the dsfed functions it calls do
the work and write their outputs atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_table_artifact

from dsfed.config import load_params


def _key(*parts: str) -> str:
    """A Prefect artifact key: lowercase letters, digits and dashes."""
    return "-".join(parts).lower().replace("_", "-").replace(".", "-")


@task(name="resolve-backbone")
def resolve_backbone(params_path: str, artifacts: str) -> dict[str, Any]:
    """Check the configured backbone and generic ControlNet load; write the manifest later stages read."""
    from dsfed.stages.backbone import run_backbone_stage

    params = load_params(params_path)
    return run_backbone_stage(params, artifacts, root=Path(params_path).parent)


@task(name="train-client-controlnet")
def train_generator(client: str, params_path: str, artifacts: str) -> dict[str, Any]:
    """At the client: fine-tune the generic ControlNet on its pairs; upload weights and masks (ledger)."""
    from dsfed.stages.controlnet import run_controlnet_stage

    return run_controlnet_stage(load_params(params_path), client, artifacts, params_path=params_path)


@task(name="synthesize-client")
def synthesize(client: str, params_path: str, artifacts: str) -> dict[str, Any]:
    """At the server: sample the client's synthetic set from its uploads only."""
    from dsfed.stages.synthesize import run_synthesize_stage

    return run_synthesize_stage(load_params(params_path), client, artifacts)


@task(name="audit-synthetic-set")
def audit(client: str, params_path: str, artifacts: str) -> dict[str, Any]:
    """At the client: controllability, realism and memorisation of its synthetic set."""
    from dsfed.stages.quality import run_quality_stage

    return run_quality_stage(load_params(params_path), client, artifacts, params_path=params_path)


@task(name="publish-table")
def publish_table(key: list[str], rows: list[dict[str, Any]], description: str) -> None:
    """A Prefect table artifact (shown on the flow run's page)."""
    create_table_artifact(key=_key(*key), table=rows, description=description)
