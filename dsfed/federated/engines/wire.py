"""Tasks and replies on a wire: every engine message as ``(kind, meta, payload)``.

``meta`` holds the message's fields as JSON-safe values (numbers, strings, lists, dicts), ``payload`` its
bytes (safetensors weights, or empty). A networked engine carries exactly these three things; the server's
ledger counts ``payload`` bytes, so a message costs on the wire what the ledger says plus a small header.
Decoding checks the kind and refuses an unknown one with one line (a node of another dsfed version).
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from typing import Any

from dsfed.federated.engines.base import (
    DeliverReply,
    DeliverTask,
    EvaluateReply,
    EvaluateTask,
    FitReply,
    FitTask,
    QueryReply,
    Reply,
)
from dsfed.federated.errors import FederatedError

__all__ = ["MESSAGES", "Message", "QueryTask", "SetupTask", "decode", "encode", "meta_to_json", "meta_from_json"]

WIRE_VERSION = 1


class QueryTask:
    """Ask a node for its :class:`~dsfed.federated.engines.base.QueryReply` (``run`` None: no state asked)."""

    def __init__(self, run: str | None) -> None:
        self.run = run

    def __eq__(self, other: object) -> bool:
        return isinstance(other, QueryTask) and other.run == self.run

    def __repr__(self) -> str:
        return f"QueryTask(run={self.run!r})"


class SetupTask:
    """Build the node's client algorithm for a run: ``kind`` (a :data:`~dsfed.federated.engines.node.NODE_BUILDERS`
    name), the run's identity and the JSON settings the builder needs (e.g. the params and the method's name).
    The node answers with a :class:`~dsfed.federated.engines.base.QueryReply` of the client it built."""

    def __init__(self, kind: str, run: str, settings: dict[str, Any]) -> None:
        self.kind, self.run, self.settings = kind, run, settings

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SetupTask) and (other.kind, other.run, other.settings) == (self.kind, self.run, self.settings)

    def __repr__(self) -> str:
        return f"SetupTask(kind={self.kind!r}, run={self.run!r})"


Message = FitTask | EvaluateTask | DeliverTask | QueryTask | SetupTask | Reply

MESSAGES: dict[str, type] = {
    "fit": FitTask,
    "evaluate": EvaluateTask,
    "deliver": DeliverTask,
    "query": QueryTask,
    "setup": SetupTask,
    "fit_reply": FitReply,
    "evaluate_reply": EvaluateReply,
    "deliver_reply": DeliverReply,
    "query_reply": QueryReply,
}
"""Wire kind -> message class (the single source of kind names)."""

_KIND = {cls: kind for kind, cls in MESSAGES.items()}
_TUPLES = {"keep", "local_keys"}  # FitTask's tuple fields (JSON gives lists)


def encode(message: Message) -> tuple[str, dict[str, Any], bytes]:
    """``message`` -> (kind, JSON-safe meta, payload bytes)."""
    kind = _KIND.get(type(message))
    if kind is None:
        raise FederatedError(f"cannot send a {type(message).__name__} through an engine")
    if isinstance(message, QueryTask):
        return kind, {"run": message.run, "wire": WIRE_VERSION}, b""
    if isinstance(message, SetupTask):
        return kind, {"kind": message.kind, "run": message.run, "settings": message.settings, "wire": WIRE_VERSION}, b""
    meta = asdict(message)
    payload = meta.pop("payload", b"")
    meta.pop("sent", None)   # a reply's ``sent`` is the server's own record: a reply on the wire was sent
    meta = {k: list(v) if isinstance(v, tuple) else v for k, v in meta.items()}
    if "config" in meta:
        meta["config"] = dict(meta["config"])
    meta["wire"] = WIRE_VERSION
    return kind, meta, bytes(payload)


def decode(kind: str, meta: dict[str, Any], payload: bytes) -> Message:
    """The inverse of :func:`encode`."""
    cls = MESSAGES.get(kind)
    if cls is None:
        raise FederatedError(f"unknown engine message kind {kind!r} (known: {', '.join(MESSAGES)})")
    meta = dict(meta)
    version = meta.pop("wire", None)
    if version != WIRE_VERSION:
        raise FederatedError(f"engine message of wire version {version}, this dsfed speaks {WIRE_VERSION}: update the node or the server")
    if cls is QueryTask:
        return QueryTask(meta.get("run"))
    if cls is SetupTask:
        return SetupTask(str(meta["kind"]), str(meta["run"]), dict(meta["settings"]))
    names = {f.name for f in fields(cls)}
    unknown = set(meta) - names
    if unknown:
        raise FederatedError(f"engine message {kind!r} has unknown fields {sorted(unknown)}")
    values = {k: tuple(v) if k in _TUPLES else v for k, v in meta.items()}
    if "payload" in names:
        values["payload"] = bytes(payload)
    message: Message = cls(**values)
    return message


def meta_to_json(meta: dict[str, Any]) -> str:
    """The meta as one JSON string (what a transport with string-valued records carries)."""
    return json.dumps(meta, sort_keys=True, allow_nan=True)


def meta_from_json(text: str) -> dict[str, Any]:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise FederatedError("engine message meta is not a JSON object")
    return value
