"""Pipeline events sent to the Prefect server: ``dsfed.client.joined`` (what the ``redistill`` deployment's
trigger waits for; see ``make ui``).

``python -m dsfed_pipeline.flows.events joined NAME [--source JSON]`` sends it to the server ``PREFECT_API_URL`` names,
else the one on 127.0.0.1:4200 if dsfed started it (``make ui``; anything else answering there is not trusted
with the auth string or the event), and says so; with no such server it sends nothing (the next ``dvc repro``
still brings everything up to date).
"""

from __future__ import annotations

import json
import os

import typer

from dsfed.orchestration.prefect_server import trusted_server

CLIENT_JOINED = "dsfed.client.joined"


def emit_client_joined(name: str, source: dict[str, object]) -> str | None:
    """Emit ``dsfed.client.joined`` for ``name`` (resource ``dsfed.client.<name>``); returns the event id."""
    from prefect.events import emit_event

    event = emit_event(event=CLIENT_JOINED, resource={"prefect.resource.id": f"dsfed.client.{name}", "dsfed.client": name},
                       payload={"client": name, "source": source})
    return str(event.id) if event is not None else None


def main(
    what: str = typer.Argument(..., help="Event: joined."),
    name: str = typer.Argument(..., help="Client name."),
    source: str = typer.Option("{}", help="The client's source as JSON (recorded in the event's payload)."),
) -> None:
    """Send a pipeline event to the running Prefect server."""
    if what != "joined":
        raise typer.BadParameter(f"unknown event {what!r} (joined)")
    found = trusted_server()
    if found is None:
        print("no Prefect server of this project answers (PREFECT_API_URL, or `make ui`'s on 127.0.0.1:4200): no event sent; "
              "run `dvc repro` to redistill")
        return
    url, env = found
    os.environ.update({"PREFECT_API_URL": url, **env})
    event_id = emit_client_joined(name, json.loads(source))
    print(f"sent {CLIENT_JOINED} for {name} to {url} (event {event_id})")


if __name__ == "__main__":
    typer.run(main)
