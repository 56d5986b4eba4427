"""``make ui`` / ``dsfed ui``: the Prefect UI on 127.0.0.1:4200 and the project's two deployments, served.

- ``pipeline``: run on demand (the UI's "Run" button): ``dsfed_pipeline/flows/pipeline.py``, DVC deciding what reruns.
- ``redistill``: triggered by every ``dsfed.client.joined`` event (``dsfed clients add`` emits one) and on
  ``redistill.cron`` from ``params.yaml``; ``dsfed_pipeline/flows/redistill.py``.

A server on the port is reused when ``PREFECT_API_URL`` names it or dsfed started it (its database keeps every
earlier run, ``make demo``'s included); otherwise one is started with ``PREFECT_HOME`` (default ``~/.prefect``),
closed to other local processes (an auth string the UI asks for, CSRF protection, CORS for its own origin:
:mod:`dsfed.orchestration.prefect_server`), and stopped on Ctrl-C. Anything else answering on the port is
refused. The deployments take no folder as a parameter: they run the project the UI was started in. The
runner serves one run at a time: both deployments drive the same DVC repository.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import typer

from dsfed.config import load_params
from dsfed.errors import DsfedError
from dsfed.orchestration.prefect_server import (
    AUTH_FILE,
    DEFAULT_URL,
    client_env,
    healthy,
    ours,
    prefect_home,
    start_server,
    stop_server,
)
from dsfed_pipeline.flows.events import CLIENT_JOINED

__all__ = ["build_deployments", "redistill_trigger"]


def redistill_trigger() -> Any:
    """The deployment trigger: one ``redistill`` run per ``dsfed.client.joined`` event, with the client's
    name from the event's payload as the ``client`` parameter (checked against params.yaml by the run)."""
    from prefect.events import DeploymentEventTrigger

    return DeploymentEventTrigger(
        name="client joined", expect={CLIENT_JOINED}, match={"prefect.resource.id": "dsfed.client.*"},
        for_each={"prefect.resource.id"}, parameters={"client": "{{ event.payload.client }}"},
    )


def build_deployments(root: str | Path = ".") -> list[Any]:
    """``pipeline`` and ``redistill`` as runner deployments for the project at ``root`` (from its params). They
    run in the serving process's folder, which :func:`main` makes ``root``: no parameter names a folder."""
    from prefect.schedules import Cron

    from dsfed_pipeline.flows.pipeline import pipeline
    from dsfed_pipeline.flows.redistill import redistill

    cfg = load_params(Path(root) / "params.yaml").redistill
    on_demand = pipeline.to_deployment(
        name="pipeline", tags=["dsfed"],
        description="Bring the whole DVC pipeline up to date (dvc repro, one task per out-of-date stage).",
    )
    redistill_runs = redistill.to_deployment(
        name="redistill", tags=["dsfed"],
        triggers=[redistill_trigger()] if cfg.on_join else [],
        schedules=[Cron(cfg.cron, timezone=cfg.timezone)] if cfg.cron else [],
        description=("After a client joins: its own stages, then server SAM, warm-started distillation, "
                     "evaluation and the report. Triggered by dsfed.client.joined"
                     + (f" and on cron {cfg.cron!r} ({cfg.timezone})." if cfg.cron else ".")),
    )
    return [closed_parameters(d) for d in (on_demand, redistill_runs)]


def closed_parameters(deployment: Any) -> Any:
    """``deployment`` with a parameter schema that refuses parameters its flow does not declare, so the server
    refuses a flow run asking for, e.g., ``root`` at creation (Prefect's schemas leave extra keys open)."""
    from prefect.utilities.callables import ParameterSchema

    class ClosedParameterSchema(ParameterSchema):
        additionalProperties: bool = False

    schema = deployment._parameter_openapi_schema
    deployment._parameter_openapi_schema = ClosedParameterSchema(**schema.model_dump(exclude_unset=True), additionalProperties=False)
    deployment.enforce_parameter_schema = True
    return deployment


def main(
    port: int = typer.Option(4200, help="Port of the Prefect server on 127.0.0.1."),
    root: Path = typer.Option(Path("."), help="Project root (dvc.yaml, params.yaml)."),
    serve: bool = typer.Option(True, help="Serve the deployments (--no-serve: the server and UI only)."),
) -> None:
    """Start (or reuse) the Prefect server and UI on 127.0.0.1:PORT and serve `pipeline` and `redistill`."""
    url = f"http://127.0.0.1:{port}/api"
    os.chdir(root)   # the deployments run the project here
    proc = None
    if os.environ.get("PREFECT_API_URL") == url and healthy(url):
        print(f"ui: reusing the Prefect server at {url} (named by PREFECT_API_URL)", file=sys.stderr)
    elif ours(url):
        os.environ.update(client_env(url))
        print(f"ui: reusing the Prefect server dsfed started at {url}", file=sys.stderr)
    elif healthy(url):
        raise DsfedError(f"127.0.0.1:{port}: something answers there that dsfed did not start; stop it, pick another --port, "
                         "or name it in PREFECT_API_URL to trust it")
    else:
        log = prefect_home() / "dsfed-server.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        proc, url = start_server(port=port, log=log)
        os.environ.update(client_env(url))
        print(f"ui: started a Prefect server at {url} (log: {log}); it asks for the auth string in "
              f"{prefect_home() / AUTH_FILE}", file=sys.stderr)
    os.environ["PREFECT_API_URL"] = url
    if url != DEFAULT_URL:
        print(f"ui: `dsfed clients add` and `make demo` look for {DEFAULT_URL}; export PREFECT_API_URL={url}",
              file=sys.stderr)
    print(f"ui: open http://127.0.0.1:{port} (Ctrl-C stops{' the server and' if proc else ''} the deployments)")
    try:
        if serve:
            from prefect import serve as serve_deployments

            serve_deployments(*build_deployments("."), limit=1)
        elif proc is not None:
            proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if proc is not None:
            stop_server(proc)


if __name__ == "__main__":
    try:
        typer.run(main)
    except DsfedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
