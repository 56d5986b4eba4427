"""The Flower ServerApp: dsfed's own rounds loop, strategies, ledger and checkpoints, on Flower's grid.

``flwr run`` (started by a federated stage, :mod:`dsfed.federated.flower.launch`) hands the run config:
the task, the params file, the artifacts root, the output folder and the task's own keys. The ServerApp
runs the same code as the in-process stage with a :class:`~dsfed.federated.engines.remote.RemoteEngine`
over a :class:`~dsfed.federated.flower.transport.GridTransport`; it ends by writing
``<out>/flower-status.txt``: ``ok <token>`` (the submission's token) or ``error <one line>`` for the stage
to report. Tasks: ``federated`` (a method's rounds), ``samfed`` (a SAM-Fed variant), ``controlnet`` (a
client's node trains its ControlNet and uploads it with its masks), ``quality`` (the node audits the synthetic
set it is sent), ``server_sam`` and ``distill`` (DSFedMed's
server stages: they train here, the nodes score the models on their own val splits and receive the deployed
student).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from dsfed.federated.flower.launch import STATUS_FILE
from dsfed.io import atomic_path

__all__ = ["DSFEDMED_TASKS", "SERVER_TASKS", "app", "run_server_task"]

DSFEDMED_TASKS = ("controlnet", "quality", "server_sam", "distill")
SERVER_TASKS = ("federated", "samfed", *DSFEDMED_TASKS)

log = logging.getLogger(__name__)
app = ServerApp()


def run_server_task(grid: Grid, config: dict[str, Any]) -> None:
    """Run one federated task on ``grid`` (``config``: Flower's run config, see the module docstring)."""
    from dsfed.config import load_params
    from dsfed.federated.engines.remote import RemoteEngine
    from dsfed.federated.errors import FederatedError
    from dsfed.federated.flower.transport import GridTransport
    from dsfed.stages.federated_outputs import write_method_outputs
    from dsfed.stages.federated_run import holdout_clients, remote_setup, run_method

    task = str(config["task"])
    if task not in SERVER_TASKS:
        raise FederatedError(f"unknown Flower task {task!r} (known: {', '.join(SERVER_TASKS)})")
    params_path = Path(str(config["params"]))
    # paths in params (checkpoints, pretrained_dir) are relative to the project, where stages run; this
    # process is Flower's own ServerApp process, started in whatever folder the SuperLink was
    os.chdir(params_path.parent)
    params = load_params(params_path)
    out, settings = Path(str(config["out"])), params.federated.flower
    if task in ("controlnet", "quality"):
        clients = [str(config["client"])]
    else:
        clients = list(params.samfed.clients) if task == "samfed" else list(params.clients) if task in DSFEDMED_TASKS else list(params.federation)
    transport = GridTransport(grid, clients, timeout_s=settings.timeout_s)
    missing = transport.wait(settings.wait_nodes_s)
    if missing:
        log.warning("no node of %s after %.0f s: the run goes on without them while federated.min_clients holds",
                    ", ".join(missing), settings.wait_nodes_s)
    if task in DSFEDMED_TASKS:   # DSFedMed's server stages: the clients validate and receive, the server trains
        from collections.abc import Sequence

        from dsfed.federated.engines import Engine
        from dsfed.federated.engines.wire import SetupTask

        def connect(setup: SetupTask, names: Sequence[str]) -> Engine:
            return RemoteEngine(transport, setup, names, name="flower")

        artifacts = Path(str(config["artifacts"]))
        if task == "controlnet":
            from dsfed.stages.controlnet import run_controlnet_stage

            run_controlnet_stage(params, str(config["client"]), artifacts, progress=False, connect=connect)
        elif task == "quality":
            from dsfed.stages.quality import run_quality_stage

            run_quality_stage(params, str(config["client"]), artifacts, progress=False, connect=connect)
        elif task == "server_sam":
            from dsfed.stages.server_sam import run_server_sam_stage

            run_server_sam_stage(params, artifacts, progress=False, connect=connect)
        else:
            from dsfed.stages.distill import run_distill_stage

            run_distill_stage(params, artifacts, connect=connect)
        return
    if task == "samfed":
        from dsfed.samfed.clients import samfed_setup
        from dsfed.samfed.run import run_variant
        from dsfed.samfed.task import public_store

        variant, artifacts = str(config["variant"]), Path(str(config["artifacts"]))
        engine = RemoteEngine(transport, samfed_setup(params, variant, public_store(artifacts)), clients, name="flower")
        run_variant(params, variant, artifacts, out, progress=False, engine=engine)
        return
    method = str(config["method"])
    engine = RemoteEngine(transport, remote_setup(params, method), clients, holdout=holdout_clients(params), name="flower")
    run = run_method(params, method, str(config["artifacts"]), out, progress=False, engine=engine)
    write_method_outputs(run, out)


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Flower's entry point: run the task and say how it ended (the stage reads it), then fail the run on error."""
    config = dict(context.run_config)
    out = Path(str(config.get("out", ".")))
    try:
        run_server_task(grid, config)
    except Exception as exc:
        text = str(exc).strip().splitlines()
        _status(out, "error " + (text[0] if text else type(exc).__name__))
        raise
    _status(out, f"ok {config.get('token', '')}")


def _status(out: Path, line: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / STATUS_FILE, overwrite=True) as tmp:
        tmp.write_text(line + "\n")
