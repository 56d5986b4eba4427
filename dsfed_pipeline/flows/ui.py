"""``make ui`` / ``dsfed ui``: the Prefect UI on 127.0.0.1:4200 and the project's two deployments, served.

- ``pipeline``: run on demand (the UI's "Run" button): ``dsfed_pipeline/flows/pipeline.py``, DVC deciding what reruns.
- ``redistill``: triggered by every ``dsfed.client.joined`` event (``dsfed clients add`` emits one) and on
  ``redistill.cron`` from ``params.yaml``; ``dsfed_pipeline/flows/redistill.py``.

A server already answering on the port is reused (its database keeps every earlier run, ``make demo``'s
included); otherwise one is started with ``PREFECT_HOME`` (default ``~/.prefect``) and stopped on Ctrl-C.
The runner serves one run at a time: both deployments drive the same DVC repository.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import typer

from dsfed.config import load_params
from dsfed.orchestration.prefect_server import DEFAULT_URL, healthy, start_server, stop_server
from dsfed_pipeline.flows.events import CLIENT_JOINED

__all__ = ["build_deployments", "redistill_trigger"]


def redistill_trigger(root: str) -> Any:
    """The deployment trigger: one ``redistill`` run per ``dsfed.client.joined`` event, with the client's
    name from the event's payload as the ``client`` parameter."""
    from prefect.events import DeploymentEventTrigger

    return DeploymentEventTrigger(
        name="client joined", expect={CLIENT_JOINED}, match={"prefect.resource.id": "dsfed.client.*"},
        for_each={"prefect.resource.id"}, parameters={"client": "{{ event.payload.client }}", "root": root},
    )


def build_deployments(root: str | Path = ".") -> list[Any]:
    """``pipeline`` and ``redistill`` as runner deployments for the project at ``root`` (from its params)."""
    from prefect.schedules import Cron

    from dsfed_pipeline.flows.pipeline import pipeline
    from dsfed_pipeline.flows.redistill import redistill

    root = str(Path(root).resolve())
    cfg = load_params(Path(root) / "params.yaml").redistill
    on_demand = pipeline.to_deployment(
        name="pipeline", parameters={"root": root}, tags=["dsfed"],
        description="Bring the whole DVC pipeline up to date (dvc repro, one task per out-of-date stage).",
    )
    redistill_runs = redistill.to_deployment(
        name="redistill", parameters={"root": root}, tags=["dsfed"],
        triggers=[redistill_trigger(root)] if cfg.on_join else [],
        schedules=[Cron(cfg.cron, timezone=cfg.timezone)] if cfg.cron else [],
        description=("After a client joins: its own stages, then server SAM, warm-started distillation, "
                     "evaluation and the report. Triggered by dsfed.client.joined"
                     + (f" and on cron {cfg.cron!r} ({cfg.timezone})." if cfg.cron else ".")),
    )
    return [on_demand, redistill_runs]


def main(
    port: int = typer.Option(4200, help="Port of the Prefect server on 127.0.0.1."),
    root: Path = typer.Option(Path("."), help="Project root (dvc.yaml, params.yaml)."),
    serve: bool = typer.Option(True, help="Serve the deployments (--no-serve: the server and UI only)."),
) -> None:
    """Start (or reuse) the Prefect server and UI on 127.0.0.1:PORT and serve `pipeline` and `redistill`."""
    url = f"http://127.0.0.1:{port}/api"
    proc = None
    if healthy(url):
        print(f"ui: reusing the Prefect server at {url}", file=sys.stderr)
    else:
        log = Path(os.environ.get("PREFECT_HOME", Path.home() / ".prefect")) / "dsfed-server.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        proc, url = start_server(port=port, log=log)
        print(f"ui: started a Prefect server at {url} (log: {log})", file=sys.stderr)
    os.environ["PREFECT_API_URL"] = url
    if url != DEFAULT_URL:
        print(f"ui: `dsfed clients add` and `make demo` look for {DEFAULT_URL}; export PREFECT_API_URL={url}",
              file=sys.stderr)
    print(f"ui: open http://127.0.0.1:{port} (Ctrl-C stops{' the server and' if proc else ''} the deployments)")
    try:
        if serve:
            from prefect import serve as serve_deployments

            serve_deployments(*build_deployments(root), limit=1)
        elif proc is not None:
            proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if proc is not None:
            stop_server(proc)


if __name__ == "__main__":
    typer.run(main)
