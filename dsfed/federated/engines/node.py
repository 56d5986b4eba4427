"""A hospital's side of a networked engine: one named client, its own store, its own state folder.

A :class:`Node` answers engine messages (:mod:`dsfed.federated.engines.wire`). The server first sends a
``setup`` naming a builder of :data:`NODE_BUILDERS` and its settings (the run's params and method); the
node builds the client algorithm over **its own** store path (never one the server names) and answers
every task through a :class:`~dsfed.federated.engines.host.ClientHost`, as the in-process engine does.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsfed.federated.engines.base import (
    DeliverReply,
    DeliverTask,
    EvaluateReply,
    EvaluateTask,
    FitReply,
    FitTask,
    QueryReply,
    Reply,
    is_client_failure,
)
from dsfed.federated.engines.client_state import ClientStateStore
from dsfed.federated.engines.host import ClientHost, one_line
from dsfed.federated.engines.wire import Message, QueryTask, SetupTask, decode, encode
from dsfed.federated.errors import FederatedError
from dsfed.federated.protocol import ClientAlgo
from dsfed.io import safe_name, sha256_file, write_json

if TYPE_CHECKING:
    from dsfed.config import Params
    from dsfed.federated.settings import MethodConfig

__all__ = ["NODE_BUILDERS", "Node", "NodeConfig"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeConfig:
    """What a hospital's node is started with (``dsfed node start``).

    Attributes:
        client: its client name (as the server's params name it).
        store: its own client store (``data.zarr``); the only data it reads.
        state: where it keeps its per-run state (resume after a restart).
        trainable: False for a held-out site: it is evaluated, never trained.
        device: ``auto``, ``cpu`` or ``cuda``.
        pretrained: its copy of the server's ``federated.pretrained_dir`` (None: the server's own path).
    """

    client: str
    store: Path
    state: Path
    trainable: bool = True
    device: str = "auto"
    pretrained: Path | None = None


NodeBuilder = Callable[[NodeConfig, dict[str, Any]], ClientAlgo]


def local_checkpoint(params: Params, spec: MethodConfig, node: NodeConfig, expected: str | None) -> MethodConfig:
    """``spec`` with its checkpoint at this node: under ``node.pretrained`` when given (the same path relative
    to the server's ``federated.pretrained_dir``), and with the server's bytes (sha256 ``expected``)."""
    if spec.checkpoint is None:
        return spec
    path = Path(spec.checkpoint)
    if node.pretrained is not None:
        try:
            path = node.pretrained / path.relative_to(params.federated.pretrained_dir)
        except ValueError:
            raise FederatedError(f"client {node.client}: the server's checkpoint {spec.checkpoint} is outside its "
                                 f"federated.pretrained_dir {params.federated.pretrained_dir}") from None
    if not path.is_file():
        raise FederatedError(f"client {node.client}: checkpoint {path} not found; copy the server's federated.pretrained_dir "
                             "to this node and pass it as `dsfed node start --pretrained DIR`")
    if expected is not None and sha256_file(path) != expected:
        raise FederatedError(f"client {node.client}: checkpoint {path} differs from the server's (sha256 {expected[:12]}...); "
                             "copy the server's file")
    return spec.model_copy(update={"checkpoint": path})


def _build_federated(node: NodeConfig, settings: dict[str, Any]) -> ClientAlgo:
    """A ``federated@<method>`` client: ``settings = {"params": <params as JSON>, "method": <name>}``."""
    from dsfed.config import parse_params
    from dsfed.federated.model_factory import model_factory
    from dsfed.federated.protocol import ClientSetup
    from dsfed.federated.registry import CLIENT_ALGORITHMS, resolve
    from dsfed.runtime import pick_device

    params = parse_params(settings["params"], source="the server's setup")
    method = str(settings["method"])
    if method not in params.federated.methods:
        raise FederatedError(f"the server asked for method {method!r}, which its own params do not define")
    spec = local_checkpoint(params, params.federated.methods[method], node, settings.get("checkpoint_sha256"))
    device = pick_device(node.device)
    build = resolve(CLIENT_ALGORITHMS, spec.client, "client algorithm")
    algo: ClientAlgo = build(ClientSetup(node.client, [node.store], model_factory(params, spec, device), params, spec, device))
    return algo


NODE_BUILDERS: dict[str, NodeBuilder] = {
    "federated": _build_federated,
}
"""Setup kind -> builder of the node's client algorithm from the server's settings."""


class Node:
    """Answers engine messages for one client (see the module docstring)."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.setup_key: str | None = None  # the setup the host was built for
        self.host: ClientHost | None = None

    @property
    def folder(self) -> Path:
        """The node's own folder: its client state and the setup it was last given."""
        return self.config.state / safe_name(self.config.client)

    def _current(self) -> ClientHost:
        """The host of the last setup; a fresh process (Flower runs one per message) rebuilds it from disk."""
        if self.host is None:
            saved = self.folder / "setup.json"
            if not saved.is_file():
                raise FederatedError(f"node {self.config.client} has not been set up (the server sends a setup first)")
            text = json.loads(saved.read_text())
            reply = self.setup(SetupTask(text["kind"], text["run"], text["settings"]), save=False)
            if not reply.ok:
                raise FederatedError(f"node {self.config.client}: its saved setup no longer builds: {reply.error}")
        assert self.host is not None
        return self.host

    def setup(self, task: SetupTask, save: bool = True) -> QueryReply:
        """Build the client algorithm the server asks for (once per setup key) and keep the setup on the
        node's disk (``save``); reply with its query (no state)."""
        if task.run != self.setup_key or self.host is None:
            builder = NODE_BUILDERS.get(task.kind)
            if builder is None:
                return QueryReply(self.config.client, error=f"unknown setup kind {task.kind!r} (known: {', '.join(NODE_BUILDERS)})")
            try:
                algo = builder(self.config, task.settings)
            except Exception as exc:
                if not is_client_failure(exc):
                    raise
                return QueryReply(self.config.client, error=one_line(exc))
            self.host, self.setup_key = ClientHost(algo, ClientStateStore(self.folder), trainable=self.config.trainable), task.run
            if save:
                self.folder.mkdir(parents=True, exist_ok=True)
                write_json(self.folder / "setup.json", {"kind": task.kind, "run": task.run, "settings": task.settings})
            log.info("node %s: set up for %s (%s)", self.config.client, task.kind, task.run)
        return self._current().query(None)

    def answer(self, kind: str, meta: dict[str, Any], payload: bytes) -> tuple[str, dict[str, Any], bytes]:
        """A wire message in, its reply out. A bug in the client-side code becomes a ``fatal`` reply (the
        server stops) rather than a dead node; the traceback stays in the node's log."""
        message = decode(kind, meta, payload)
        try:
            reply = self.handle(message)
        except Exception as exc:
            log.exception("node %s: a bug while handling %s", self.config.client, kind)
            reply = _error_reply(message, self.config.client, one_line(exc))
            reply.fatal = True
        return encode(reply)

    def handle(self, message: Message) -> Reply:
        """One task -> its reply (a client failure comes back as an error reply; a bug raises)."""
        if isinstance(message, SetupTask):
            return self.setup(message)
        try:
            if isinstance(message, QueryTask):
                return self._current().query(message.run)
            if isinstance(message, FitTask):
                return self._current().fit(message)
            if isinstance(message, EvaluateTask):
                return self._current().evaluate(message)
            if isinstance(message, DeliverTask):
                return self._current().deliver(message)
        except FederatedError as exc:
            return _error_reply(message, self.config.client, str(exc))
        raise FederatedError(f"node {self.config.client}: {type(message).__name__} is not a task")


def _error_reply(message: Message, client: str, error: str) -> Reply:
    cls: type[Reply] = {FitTask: FitReply, EvaluateTask: EvaluateReply, DeliverTask: DeliverReply}.get(type(message), QueryReply)  # type: ignore[assignment]
    return cls(client, error=error)
