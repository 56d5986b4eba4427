"""The DVC stage plan: which stages to bring up to date, in an order DVC accepts (no Prefect, no torch).

``dvc status`` names the stages that changed and ``dvc dag`` what follows them; :func:`order_stages` puts
them in dependency order (:mod:`graphlib`, ties broken by ``dvc.yaml`` order).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

from dsfed.errors import DsfedError

__all__ = ["STAGE", "DvcBusy", "dvc", "order_stages", "parse_dag", "plan_stages"]

STAGE = re.compile(r"Running stage '([^']+)'")
BUSY = ("Unable to acquire lock", "is busy")  # DVC's wording for a held repository lock (older, 3.67)
NODE = re.compile(r'^"([^"]+)";$')
EDGE = re.compile(r'^"([^"]+)" -> "([^"]+)";$')


class DvcBusy(OSError):
    """Another DVC process holds the repository's lock (e.g. a `dvc repro` started by hand): worth a retry."""


def dvc(args: list[str], root: Path) -> subprocess.CompletedProcess[str]:
    """``dvc ARGS`` in ``root``; raises :class:`DvcBusy` when DVC's lock is held."""
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if done.returncode != 0 and any(b in done.stderr + done.stdout for b in BUSY):
        raise DvcBusy(f"dvc {' '.join(args)}: another DVC process holds the lock in {root}")
    return done


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
    children: dict[str, set[str]] = {n: set() for n in nodes}
    parents: dict[str, set[str]] = {n: set() for n in nodes}
    for up, dn in edges:
        children[up].add(dn)
        parents[dn].add(up)

    def closure(start: set[str], step: dict[str, set[str]]) -> set[str]:
        seen, todo = set(start), list(start)
        while todo:
            for nxt in step[todo.pop()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        return seen

    todo = closure(changed & set(nodes), children)
    if targets:
        unknown = [t for t in targets if not any(n == t or n.startswith(f"{t}@") for n in nodes)]
        if unknown:
            raise DsfedError(f"pipeline targets: no stage {', '.join(map(repr, unknown))} in dvc.yaml "
                             f"(stages: {', '.join(sorted({n.split('@')[0] for n in nodes}))})")
        picked = {n for n in nodes if any(n == t or n.startswith(f"{t}@") for t in targets)}
        todo &= closure(picked, parents)
    index = {n: i for i, n in enumerate(nodes)}
    sorter = TopologicalSorter({n: parents[n] & todo for n in todo})
    try:
        sorter.prepare()
    except CycleError as exc:
        raise RuntimeError(f"no order for stages {sorted(exc.args[1])} (a cycle in dvc dag?)") from exc
    order: list[str] = []
    ready: list[str] = []
    while sorter.is_active():
        ready = sorted([*ready, *sorter.get_ready()], key=index.__getitem__)  # ties: dvc.yaml order
        first = ready.pop(0)
        order.append(first)
        sorter.done(first)
    return order


def plan_stages(root: Path, targets: list[str]) -> list[str]:
    """The stages that may be out of date in the DVC repository at ``root``, in execution order.

    From ``dvc status`` (what changed) and ``dvc dag`` (what follows), not ``dvc repro --dry``, which
    fails on a new client: its later stages' inputs do not exist yet.
    """
    status = dvc(["status", "--json"], root)
    dag = dvc(["dag", "--dot"], root)
    for done in (status, dag):
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(done.args[2:])} failed:\n{done.stderr.strip()}")
    nodes, edges = parse_dag(dag.stdout)
    return order_stages(nodes, edges, set(json.loads(status.stdout or "{}")), targets)
