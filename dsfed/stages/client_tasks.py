"""A client's own stage (``controlnet@<client>``, ``quality@<client>``) as a ServerApp task on
``federated.engine`` flower or simulation: one client's node does the work, the ServerApp writes the stage's
outputs; the run's status goes to ``artifacts/.engine-runs/<task>-<client>/``, outside them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dsfed.config import Params
    from dsfed.federated.engines import Engine
    from dsfed.federated.engines.wire import SetupTask

__all__ = ["Connect", "run_client_task_on_engine"]

Connect = Callable[["SetupTask", Sequence[str]], "Engine"]
"""``connect(setup, clients)``: an engine whose nodes build ``setup`` (in a ServerApp, a RemoteEngine)."""


def run_client_task_on_engine(params: Params, params_path: str | Path | None, task: str, client: str, artifacts: Path) -> None:
    """Submit ``task`` for ``client`` to ``federated.engine`` and wait for it; one line on failure."""
    from dsfed.errors import DsfedError
    from dsfed.stages.federated_outputs import ENGINE_RUNS, run_on_engine
    from dsfed.stages.prepare import store_path

    if params_path is None:
        raise DsfedError(f"{task}@{client}: federated.engine {params.federated.engine} needs the params file's path")
    run_on_engine(params, Path(params_path), {"task": task, "client": client}, artifacts, artifacts / ENGINE_RUNS / f"{task}-{client}",
                  {client: store_path(artifacts, client)})
