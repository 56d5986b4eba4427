"""The whole pipeline from Prefect, with DVC deciding what reruns: one task per DVC stage, in DVC's order.

``dvc status`` names the stages that changed and ``dvc dag`` what follows them; each of those then runs,
in order, as ``dvc repro --single-item <stage>``, so DVC checks it again (an upstream stage whose outputs
came out identical leaves it up to date, and it is skipped), runs its command (``python -m
flows.<stage>``, which reports its own flow run to the same Prefect server) and updates ``dvc.lock``. ``dvc.lock`` stays the one source of
truth whichever way the pipeline is started: ``dvc repro``, this flow, or a deployment.

The flow runs on the project in its working folder: no run-time parameter can point it at another folder
(the ``pipeline`` deployment that ``make ui`` serves would otherwise run any folder's ``dvc.yaml`` commands
for whoever can post a flow run); ``--root`` on the command line changes folder first.
"""

from __future__ import annotations

import os

import typer
from prefect import flow
from prefect.artifacts import create_table_artifact

from dsfed_pipeline.flows._cli import run_flow
from dsfed_pipeline.tasks.pipeline import plan, run_stage


@flow(name="pipeline", log_prints=True)
def pipeline(targets: list[str] | None = None) -> list[dict[str, object]]:
    """Bring the DVC pipeline in the working folder (or ``targets``, stage names of its dvc.yaml) up to date,
    one task per stage."""
    stages = plan(".", list(targets or []))
    print(f"{len(stages)} stage(s) out of date or downstream of one: {', '.join(stages) or 'none'}")
    rows = [run_stage(".", stage) for stage in stages]
    create_table_artifact(key="pipeline-stages", table=rows or [{"stage": "-", "ran": False, "seconds": 0}],
                          description="stages DVC found out of date, whether each ran, and its wall time (s)")
    return rows


def main(
    targets: list[str] = typer.Argument(None, help="DVC stages to bring up to date (default: all)."),
    root: str = typer.Option(".", help="Project root (where dvc.yaml is); the flow runs there."),
) -> None:
    """Run the pipeline flow (the Prefect face of `dvc repro`)."""
    os.chdir(root)
    run_flow(pipeline, targets or [])


if __name__ == "__main__":
    typer.run(main)
