"""The whole pipeline from Prefect, with DVC deciding what reruns: one task per DVC stage, in DVC's order.

``dvc status`` names the stages that changed and ``dvc dag`` what follows them; each of those then runs,
in order, as ``dvc repro --single-item <stage>``, so DVC checks it again (an upstream stage whose outputs
came out identical leaves it up to date, and it is skipped), runs its command (``python -m
flows.<stage>``, which reports its own flow run to the same Prefect server) and updates ``dvc.lock``. ``dvc.lock`` stays the one source of
truth whichever way the pipeline is started: ``dvc repro``, this flow, or a deployment.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import typer
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact

from flows._cli import run_flow
from tasks import transient_io

STAGE = re.compile(r"Running stage '([^']+)'")
BUSY = "Unable to acquire lock"


class DvcBusy(OSError):
    """Another DVC process holds the repository's lock (e.g. a `dvc repro` started by hand): worth a retry."""


def _dvc(args: list[str], root: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if done.returncode != 0 and BUSY in done.stderr + done.stdout:
        raise DvcBusy(f"dvc {' '.join(args)}: another DVC process holds the lock in {root}")
    return done


NODE = re.compile(r'^"([^"]+)";$')
EDGE = re.compile(r'^"([^"]+)" -> "([^"]+)";$')


def parse_dag(dot: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Stages (in ``dvc.yaml`` order) and edges (upstream, downstream) from ``dvc dag --dot``."""
    lines = [line.strip() for line in dot.splitlines()]
    nodes = [m.group(1) for line in lines if (m := NODE.match(line))]
    edges = [(m.group(1), m.group(2)) for line in lines if (m := EDGE.match(line))]
    return nodes, edges


def order_stages(nodes: list[str], edges: list[tuple[str, str]], changed: set[str], targets: list[str]) -> list[str]:
    """The stages to bring up to date, in an order DVC would accept: every changed stage and everything
    downstream of it (a descendant may turn out unchanged: DVC then skips it), limited to ``targets`` and
    their upstream when given (a target is a stage or a ``foreach`` group such as ``prepare``)."""
    children: dict[str, list[str]] = {n: [] for n in nodes}
    parents: dict[str, list[str]] = {n: [] for n in nodes}
    for up, down in edges:
        children[up].append(down)
        parents[down].append(up)

    def closure(start: set[str], step: dict[str, list[str]]) -> set[str]:
        seen, todo = set(start), list(start)
        while todo:
            for nxt in step[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    todo = closure(changed & set(nodes), children)
    if targets:
        picked = {n for n in nodes if any(n == t or n.startswith(f"{t}@") for t in targets)}
        todo &= closure(picked, parents)
    order: list[str] = []
    placed: set[str] = set()
    while len(order) < len(todo):  # Kahn's algorithm, ties broken by dvc.yaml order
        for n in nodes:
            if n in todo and n not in placed and all(p in placed or p not in todo for p in parents[n]):
                order.append(n)
                placed.add(n)
                break
        else:
            raise RuntimeError(f"no order for stages {sorted(todo - placed)} (a cycle in dvc dag?)")
    return order


@task(name="plan-stages", retries=6, retry_delay_seconds=20, retry_condition_fn=transient_io)
def plan(root: str, targets: list[str]) -> list[str]:
    """The stages that may be out of date, in execution order (retried while DVC's lock is held).

    From ``dvc status`` (what changed) and ``dvc dag`` (what follows), not ``dvc repro --dry``, which
    fails on a new client: its later stages' inputs do not exist yet.
    """
    status = _dvc(["status", "--json"], Path(root))
    dag = _dvc(["dag", "--dot"], Path(root))
    for done in (status, dag):
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(done.args[2:])} failed:\n{done.stderr.strip()}")
    changed = set(json.loads(status.stdout or "{}"))
    nodes, edges = parse_dag(dag.stdout)
    return order_stages(nodes, edges, changed, targets)


@task(name="dvc-stage", task_run_name="{stage}", retries=6, retry_delay_seconds=20, retry_condition_fn=transient_io)
def run_stage(root: str, stage: str) -> dict[str, object]:
    """``dvc repro --single-item STAGE``: ``{"stage", "ran", "seconds"}`` (ran: False when DVC found it up to
    date). Retried only while DVC's lock is held; a failing stage fails the run with its log."""
    t0 = time.perf_counter()
    done = _dvc(["repro", "--single-item", stage], Path(root))
    logger = get_run_logger()
    for line in (done.stdout + done.stderr).splitlines()[-40:]:
        logger.info(line)
    if done.returncode != 0:
        raise RuntimeError(f"stage {stage} failed (exit {done.returncode}); its log is above")
    return {"stage": stage, "ran": bool(STAGE.search(done.stdout)), "seconds": round(time.perf_counter() - t0, 2)}


@flow(name="pipeline", log_prints=True)
def pipeline(targets: list[str] | None = None, root: str = ".") -> list[dict[str, object]]:
    """Bring the DVC pipeline (or ``targets``) up to date, one task per stage."""
    stages = plan(root, list(targets or []))
    print(f"{len(stages)} stage(s) out of date or downstream of one: {', '.join(stages) or 'none'}")
    rows = [run_stage(root, stage) for stage in stages]
    create_table_artifact(key="pipeline-stages", table=rows or [{"stage": "-", "ran": False, "seconds": 0}],
                          description="stages DVC found out of date, whether each ran, and its wall time (s)")
    return rows


def main(
    targets: list[str] = typer.Argument(None, help="DVC stages to bring up to date (default: all)."),
    root: str = typer.Option(".", help="Project root (where dvc.yaml is)."),
) -> None:
    """Run the pipeline flow (the Prefect face of `dvc repro`)."""
    run_flow(pipeline, targets or [], root)


if __name__ == "__main__":
    typer.run(main)
