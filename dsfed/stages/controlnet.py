"""The ``controlnet@<client>`` stage, at the client: its store and the backbone in, its upload folder
``artifacts/generators/<client>/`` out (ControlNet weights, masks, the ledger of what it uploads).

In process the client's code runs here over ``artifacts/clients/<client>``. With ``federated.engine`` flower or
simulation the stage is a ServerApp task: the client's node trains on its own store and sends the upload
folder's files (:mod:`dsfed.generation.node`); the server writes them, never opening the client's store.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsfed.stages.backbone import backbone_dir
from dsfed.stages.prepare import client_store
from dsfed.timings import record_measured

if TYPE_CHECKING:
    from dsfed.config import Params
    from dsfed.stages.client_tasks import Connect

__all__ = ["generator_dir", "run_controlnet_stage"]


def generator_dir(artifacts: str | Path, client: str) -> Path:
    """What ``controlnet@<client>`` uploads: ``artifacts/generators/<client>``."""
    return Path(artifacts) / "generators" / client


def _held_out(params: Params, client: str, artifacts: Path) -> dict[str, Any]:
    """The held-out client trains no generator (its folder says so); written by the server, no node asked."""
    from dsfed.generation.client import write_held_out

    return write_held_out(generator_dir(artifacts, client), client)


def run_controlnet_stage(params: Params, client: str, artifacts: str | Path, progress: bool = True,
                         connect: Connect | None = None,
                         params_path: str | Path | None = None) -> dict[str, Any]:
    """Fine-tune the generic ControlNet on ``client``'s training pairs and write its upload folder.

    ``connect``: how the client is reached (a Flower ServerApp's: its node trains). None: in this process, or,
    with ``federated.engine`` flower or simulation, as a ServerApp task (``params_path`` needed)."""
    from dsfed.errors import DsfedError

    artifacts = Path(artifacts)
    if client not in params.clients:
        raise DsfedError(f"clients.{client}: no such client (have: {', '.join(params.clients)})")
    if connect is None and params.federated.engine != "inprocess":
        if client == params.data.holdout:
            return _held_out(params, client, artifacts)
        from dsfed.stages.client_tasks import run_client_task_on_engine

        run_client_task_on_engine(params, params_path, "controlnet", client, artifacts)
        return dict(json.loads((generator_dir(artifacts, client) / "generator.json").read_text()))
    if connect is not None:
        return _on_node(params, client, artifacts, connect)
    from dsfed.generation.client import MEASURED, train_client_generator

    summary = train_client_generator(params, client, client_store(params, client, artifacts), backbone_dir(artifacts),
                                     generator_dir(artifacts, client), progress)
    if not summary.get("held_out"):
        record_measured(artifacts, f"controlnet@{client}", {k: summary[k] for k in (*MEASURED, "device")})
    return summary


def _on_node(params: Params, client: str, artifacts: Path, connect: Connect) -> dict[str, Any]:
    """One fit at ``client``'s node; its reply (the upload folder's files) written as ``generators/<client>``."""
    from dsfed.federated.engines import FitTask
    from dsfed.federated.engines.remote import setup_task
    from dsfed.federated.errors import FederatedError
    from dsfed.federated.serialize import from_bytes, to_bytes
    from dsfed.generation.node import generator_settings, unpack_folder

    if client == params.data.holdout:
        return _held_out(params, client, artifacts)
    setup = setup_task("controlnet", generator_settings(params.model_dump(mode="json"), backbone_dir(artifacts), Path.cwd()))
    engine = connect(setup, [client])
    try:
        reply = engine.fit({client: FitTask(setup.run, 1, to_bytes({}), {}, committed=0)})[client]
    finally:
        engine.close()
    if not reply.ok:
        raise FederatedError(f"controlnet@{client}: the client's node could not train its ControlNet: {reply.error}")
    out = generator_dir(artifacts, client)
    unpack_folder(from_bytes(reply.payload), out)
    if "seconds" in reply.metrics:   # measured at the node: to the timings log, not the upload folder
        record_measured(artifacts, f"controlnet@{client}", {"seconds": float(reply.metrics["seconds"]), "at_node": True})
    return dict(json.loads((out / "generator.json").read_text()))
