"""Tasks of the ``prepare@<client>`` stage: build a client's Zarr store and publish its summary."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.artifacts import create_table_artifact

from dsfed.config import load_params
from dsfed.data.store import ClientStore
from dsfed.data.summary import store_summary
from dsfed.stages.prepare import run_prepare_stage


@task(name="build-client-store")
def build_store(client: str, params_path: str, artifacts: str, overwrite: bool = False) -> str:
    """Build ``<artifacts>/clients/<client>/data.zarr`` from ``clients.<client>.source``; returns the store path."""
    params = load_params(params_path)
    return str(run_prepare_stage(params, client, artifacts, root=Path(params_path).parent, overwrite=overwrite))


@task(name="publish-store-summary")
def publish_summary(store_path: str) -> dict[str, object]:
    """Publish a table artifact (samples per split, foreground fraction per class); returns the summary."""
    summary = store_summary(ClientStore(store_path))
    create_table_artifact(
        key=f"prepare-{summary['client']}".lower().replace("_", "-").replace(".", "-"),
        table=summary["table"],
        description=f"Client store {store_path}",
    )
    return summary
