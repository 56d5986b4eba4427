"""The whole pipeline from Prefect, with DVC deciding what reruns: one task per DVC stage, in DVC's order.

``dvc repro --dry`` names the stages that are out of date, in execution order; each then runs as
``dvc repro --single-item <stage>``, so DVC checks it again (an upstream stage whose outputs came out
identical leaves it up to date), runs its command (``python -m flows.<stage>``, which reports its own
flow run to the same Prefect server) and updates ``dvc.lock``. ``dvc.lock`` stays the one source of
truth whichever way the pipeline is started: ``dvc repro``, this flow, or a deployment.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import typer
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact

from flows._cli import run_flow

STAGE = re.compile(r"Running stage '([^']+)'")


def _dvc(args: list[str], root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


@task(name="plan-stages")
def plan(root: str, targets: list[str]) -> list[str]:
    """The out-of-date stages, in the order ``dvc repro`` would run them."""
    done = _dvc(["repro", "--dry", *targets], Path(root))
    if done.returncode != 0:
        raise RuntimeError(f"dvc repro --dry failed:\n{done.stderr.strip()}")
    return STAGE.findall(done.stdout)


@task(name="dvc-stage", task_run_name="{stage}")
def run_stage(root: str, stage: str) -> bool:
    """``dvc repro --single-item STAGE``; True when the stage ran, False when DVC found it up to date."""
    done = _dvc(["repro", "--single-item", stage], Path(root))
    logger = get_run_logger()
    for line in (done.stdout + done.stderr).splitlines()[-40:]:
        logger.info(line)
    if done.returncode != 0:
        raise RuntimeError(f"stage {stage} failed (exit {done.returncode}); its log is above")
    return bool(STAGE.search(done.stdout))


@flow(name="pipeline", log_prints=True)
def pipeline(targets: list[str] | None = None, root: str = ".") -> list[dict[str, object]]:
    """Bring the DVC pipeline (or ``targets``) up to date, one task per stage."""
    stages = plan(root, list(targets or []))
    print(f"{len(stages)} stage(s) out of date: {', '.join(stages) or 'none'}")
    rows = [{"stage": stage, "ran": run_stage(root, stage)} for stage in stages]
    create_table_artifact(key="pipeline-stages", table=rows or [{"stage": "-", "ran": False}],
                          description="stages DVC found out of date, and whether each ran")
    return rows


def main(
    targets: list[str] = typer.Argument(None, help="DVC stages to bring up to date (default: all)."),
    root: str = typer.Option(".", help="Project root (where dvc.yaml is)."),
) -> None:
    """Run the pipeline flow (the Prefect face of `dvc repro`)."""
    run_flow(pipeline, targets or [], root)


if __name__ == "__main__":
    typer.run(main)
