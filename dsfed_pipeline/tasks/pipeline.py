"""Tasks of the ``pipeline`` flow: plan the out-of-date DVC stages, run one stage (paths and names in and out)."""

from __future__ import annotations

import time
from pathlib import Path

from prefect import get_run_logger, task

from dsfed.orchestration.plan import STAGE, dvc, plan_stages
from dsfed_pipeline.tasks import transient_io


@task(name="plan-stages", retries=6, retry_delay_seconds=20, retry_condition_fn=transient_io)
def plan(root: str, targets: list[str]) -> list[str]:
    """The stages that may be out of date, in execution order (retried while DVC's lock is held)."""
    return plan_stages(Path(root), targets)


@task(name="dvc-stage", task_run_name="{stage}", retries=6, retry_delay_seconds=20, retry_condition_fn=transient_io)
def run_stage(root: str, stage: str) -> dict[str, object]:
    """``dvc repro --single-item STAGE``: ``{"stage", "ran", "seconds"}`` (ran: False when DVC found it up to
    date). Retried only while DVC's lock is held; a failing stage fails the run with its log."""
    t0 = time.perf_counter()
    done = dvc(["repro", "--single-item", stage], Path(root))
    logger = get_run_logger()
    for line in (done.stdout + done.stderr).splitlines()[-40:]:
        logger.info(line)
    if done.returncode != 0:
        raise RuntimeError(f"stage {stage} failed (exit {done.returncode}); its log is above")
    return {"stage": stage, "ran": bool(STAGE.search(done.stdout)), "seconds": round(time.perf_counter() - t0, 2)}
