"""The ``quality@<client>`` stage, at the client: its store and its synthetic set in, the audit numbers
``artifacts/quality/<client>/`` out (quality.json, grid.png, the audit ledger).

In process the client's code runs here. With ``federated.engine`` flower or simulation the stage is a ServerApp
task: the server delivers the client's synthetic set to its node, the node audits it against its own data and
sends back ``quality.json`` and the audit ledger; the grid of its real images stays at the node (the server's
``grid.png`` is a blank).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsfed.stages.prepare import client_store
from dsfed.stages.synthesize import synthetic_path
from dsfed.timings import record_measured

if TYPE_CHECKING:
    from dsfed.config import Params
    from dsfed.stages.client_tasks import Connect

__all__ = ["quality_dir", "run_quality_stage"]


def quality_dir(artifacts: str | Path, client: str) -> Path:
    """Where ``quality@<client>`` writes: ``artifacts/quality/<client>``."""
    return Path(artifacts) / "quality" / client


def run_quality_stage(params: Params, client: str, artifacts: str | Path, progress: bool = True,
                      connect: Connect | None = None,
                      params_path: str | Path | None = None) -> dict[str, Any]:
    """Audit ``client``'s synthetic set against its real data.

    ``connect``: how the client is reached (a Flower ServerApp's: its node audits). None: in this process, or,
    with ``federated.engine`` flower or simulation, as a ServerApp task (``params_path`` needed)."""

    artifacts = Path(artifacts)
    if connect is None and params.federated.engine != "inprocess":
        from dsfed.stages.client_tasks import run_client_task_on_engine

        run_client_task_on_engine(params, params_path, "quality", client, artifacts)
        return dict(json.loads((quality_dir(artifacts, client) / "quality.json").read_text()))
    if connect is not None:
        return _on_node(params, client, artifacts, connect)
    from dsfed.generation.audit import audit_client

    quality = audit_client(params, client, client_store(params, client, artifacts), synthetic_path(artifacts, client),
                           quality_dir(artifacts, client), progress)
    if "seconds" in quality:
        record_measured(artifacts, f"quality@{client}", {"seconds": quality["seconds"]})
    return quality


def _on_node(params: Params, client: str, artifacts: Path, connect: Connect) -> dict[str, Any]:
    """Deliver the synthetic set to ``client``'s node, ask it to audit, write what it sends back."""
    import hashlib

    from dsfed.federated.engines import FitTask
    from dsfed.federated.engines.base import DeliverTask
    from dsfed.federated.engines.remote import setup_task
    from dsfed.federated.errors import FederatedError
    from dsfed.federated.serialize import from_bytes, to_bytes
    from dsfed.generation.node import SYNTHETIC_SET, generator_settings, pack_folder, unpack_folder
    from dsfed.stages.backbone import backbone_dir

    synthetic = synthetic_path(artifacts, client)
    if not synthetic.is_dir():
        raise FederatedError(f"quality@{client}: no synthetic set at {synthetic} (run `dvc repro synthesize@{client}` first)")
    payload = to_bytes(pack_folder(synthetic))
    digest = hashlib.sha256(payload).hexdigest()
    setup = setup_task("controlnet", generator_settings(params.model_dump(mode="json"), backbone_dir(artifacts), Path.cwd()))
    engine = connect(setup, [client])
    try:
        held = engine.query([client], None)[client]
        if not (held.ok and held.holds.get(SYNTHETIC_SET) == digest):
            sent = engine.deliver({client: DeliverTask(setup.run, SYNTHETIC_SET, payload, digest)})[client]
            if not sent.ok:
                raise FederatedError(f"quality@{client}: the client's node could not take its synthetic set: {sent.error}")
        reply = engine.fit({client: FitTask(setup.run, 2, to_bytes({}), {"step": "audit"}, committed=0)})[client]
    finally:
        engine.close()
    if not reply.ok:
        raise FederatedError(f"quality@{client}: the client's node could not audit its synthetic set: {reply.error}")
    out = quality_dir(artifacts, client)
    unpack_folder(from_bytes(reply.payload), out)
    return dict(json.loads((out / "quality.json").read_text()))
