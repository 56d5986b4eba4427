"""The ``redistill`` flow: after a client joins, bring the pipeline up to date and say what changed.

``make ui`` serves it as a deployment triggered by ``dsfed.client.joined`` (``dsfed clients add`` emits
it) and on ``redistill.cron``. It drives DVC through the ``pipeline`` flow, so DVC decides what reruns:
with a pinned ``federated.clients``, only the new client's ``prepare``, ``controlnet``, ``synthesize`` and
``quality`` instances, the ``federation`` roster (unchanged, so no federated stage follows) and the
server side (``server_sam``, ``distill`` warm-started from the previous distilled models, ``evaluate``,
``report``). A scheduled run with nothing out of date does nothing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer
from prefect import flow
from prefect.artifacts import create_markdown_artifact

from dsfed_pipeline.flows._cli import run_flow
from dsfed_pipeline.flows.pipeline import pipeline
from dsfed_pipeline.tasks.orchestration import check_client, summarise


@flow(name="redistill", log_prints=True)
def redistill(client: str | None = None) -> list[dict[str, Any]]:
    """Bring the pipeline in the working folder up to date after ``client`` joined (None: a scheduled run);
    returns the pipeline's per-stage rows and publishes a Markdown summary. No run-time parameter names the
    folder (see :mod:`dsfed_pipeline.flows.pipeline`)."""
    root = str(Path(".").resolve())
    names = check_client(root, client)
    print(f"redistill: {len(names)} clients in params.yaml{f'; {client} joined' if client else ''}")
    stages = pipeline()
    markdown = summarise(root, client, stages)
    create_markdown_artifact(key="redistill", markdown=markdown,
                             description=f"redistill{f' after {client} joined' if client else ''}")
    print(markdown)
    return stages


def main(
    client: str = typer.Argument(None, help="The client that joined (default: none, as a scheduled run)."),
    root: str = typer.Option(".", help="Project root (where dvc.yaml and params.yaml are); the flow runs there."),
) -> None:
    """Run the redistill flow once, by hand (what the `redistill` deployment runs on an event or schedule)."""
    os.chdir(root)
    run_flow(redistill, client)


if __name__ == "__main__":
    typer.run(main)
