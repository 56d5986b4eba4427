"""A hospital's side of a networked engine: one named client, its own store, its own state folder.

A :class:`Node` answers engine messages (:mod:`dsfed.federated.engines.wire`). The server first sends a
``setup`` naming a builder of :data:`NODE_BUILDERS` and its settings (the run's params and method); the
node builds the client algorithm over **its own** store path (never one the server names) and answers
every task through a :class:`~dsfed.federated.engines.host.ClientHost`, as the in-process engine does.
"""

from __future__ import annotations

import hashlib
import importlib
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

__all__ = ["NODE_BUILDERS", "Node", "NodeConfig", "node_builder"]

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
        public: its copy of SAM-Fed's public store (None: the server's path).
    """

    client: str
    store: Path
    state: Path
    trainable: bool = True
    device: str = "auto"
    pretrained: Path | None = None
    public: Path | None = None


NodeBuilder = Callable[[NodeConfig, dict[str, Any]], ClientAlgo]


def local_file(params: Params, server_path: Path, node: NodeConfig, expected: str | None) -> Path:
    """Where this node holds the server's checkpoint ``server_path``: under ``node.pretrained`` when given (the
    same path relative to the server's ``federated.pretrained_dir``), else the same path; its bytes must be the
    server's (sha256 ``expected``; None: not checked). Raises :class:`FederatedError` with one line otherwise."""
    path = Path(server_path)
    if node.pretrained is not None:
        try:
            path = node.pretrained / path.relative_to(params.federated.pretrained_dir)
        except ValueError:
            raise FederatedError(f"client {node.client}: the server's checkpoint {server_path} is outside its "
                                 f"federated.pretrained_dir {params.federated.pretrained_dir}") from None
    if not path.is_file():
        raise FederatedError(f"client {node.client}: checkpoint {path} not found; copy the server's federated.pretrained_dir "
                             "to this node and pass it as `dsfed node start --pretrained DIR`")
    if expected is not None and sha256_file(path) != expected:
        raise FederatedError(f"client {node.client}: checkpoint {path} differs from the server's (sha256 {expected[:12]}...); "
                             "copy the server's file")
    return path


def local_checkpoint(params: Params, spec: MethodConfig, node: NodeConfig, expected: str | None) -> MethodConfig:
    """``spec`` with its checkpoint where this node holds it (:func:`local_file`)."""
    if spec.checkpoint is None:
        return spec
    return spec.model_copy(update={"checkpoint": local_file(params, spec.checkpoint, node, expected)})


def _build_samfed(node: NodeConfig, settings: dict[str, Any]) -> ClientAlgo:
    """A ``samfed@<variant>`` client: ``settings`` from :func:`dsfed.samfed.clients.samfed_setup`."""
    from dsfed.config import parse_params
    from dsfed.runtime import pick_device
    from dsfed.samfed.clients import build_samfed_client, client_checkpoints, with_checkpoints

    params = parse_params(settings["params"], source="the server's setup")
    cfg, variant = params.samfed, str(settings["variant"])
    if variant not in cfg.variants:
        raise FederatedError(f"the server asked for SAM-Fed variant {variant!r}, which its own params do not define")
    if node.client not in cfg.clients:
        raise FederatedError(f"client {node.client} is not one of samfed.clients ({', '.join(cfg.clients)})")
    expected = dict(settings.get("checkpoint_sha256", {}).get(node.client, {}))
    paths = {name: local_file(params, path, node, expected.get(name)) for name, path in client_checkpoints(cfg, variant, node.client).items()}
    public = node.public if node.public is not None else Path(str(settings["public"]))
    if not public.is_dir():
        raise FederatedError(f"client {node.client}: the public store {public} not found; copy the server's public store "
                             "(artifacts/samfed/public/data.zarr) and pass it as `dsfed node start --public DIR`")
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]   # a new setup: a fresh cache
    cache = node.state / "samfed-cache" / safe_name(node.client) / key   # beside its state folder, which keeps one run only
    return build_samfed_client(with_checkpoints(cfg, variant, node.client, paths), params.seed, variant, node.client, node.store,
                               public, cache, pick_device(node.device))


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


def _build_validate(node: NodeConfig, settings: dict[str, Any]) -> ClientAlgo:
    """DSFedMed's client after training: scores the server's models, keeps the deployed one in
    ``<state>/received/<client>/`` (beside its state folder, which keeps one run and deletes every other
    folder in it) (``settings`` from :func:`dsfed.federated.validator.validation_settings`)."""
    from dsfed.config import parse_params
    from dsfed.federated.validator import ValidationClient
    from dsfed.runtime import pick_device

    params = parse_params(settings["params"], source="the server's setup")
    if node.client not in params.clients:
        raise FederatedError(f"client {node.client} is not one of the server's clients ({', '.join(params.clients)})")
    return ValidationClient(node.client, node.store, dict(settings["architectures"]), len(params.data.classes), params.data.mask_size,
                            node.state / "received" / safe_name(node.client), params.seed, pick_device(node.device))


NODE_BUILDERS: dict[str, NodeBuilder | str] = {
    "federated": _build_federated,
    "samfed": _build_samfed,
    "validate": _build_validate,
    "controlnet": "dsfed.generation.node:build_generator_client",
}
"""Setup kind -> builder of the node's client algorithm from the server's settings; a ``"module:function"``
string is imported when a setup of its kind arrives (the generation client needs diffusers, which a node
without DSFedMed's generation does not install)."""


def node_builder(kind: str) -> NodeBuilder | None:
    """The builder of setup kind ``kind`` (None: unknown), importing a lazily named one."""
    builder = NODE_BUILDERS.get(kind)
    if isinstance(builder, str):
        module, _, name = builder.partition(":")
        try:
            found: NodeBuilder = getattr(importlib.import_module(module), name)
        except ImportError as exc:
            extra = " (pip install 'dsfed[generation]')" if kind == "controlnet" else ""
            raise FederatedError(f"setup kind {kind!r} needs {exc.name or module}, which this node does not have installed{extra}") from None
        return found
    return builder


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
            try:
                builder = node_builder(task.kind)
                if builder is None:
                    return QueryReply(self.config.client, error=f"unknown setup kind {task.kind!r} (known: {', '.join(NODE_BUILDERS)})")
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
