"""Wire messages (:mod:`dsfed.federated.engines.wire`) as Flower messages, and back.

A Flower message holds a ``RecordDict``: ``meta`` (a ``ConfigRecord`` with the message kind and its JSON
meta) and, when there are payload bytes, ``payload`` (an ``ArrayRecord`` holding them as one uint8 array:
Flower splits arrays into 5 MB chunks, so weights of any size travel). Flower's message type is ``train``
for a fit, ``evaluate`` for an evaluation and ``query.<kind>`` for the rest.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from dsfed.federated.engines.wire import meta_from_json, meta_to_json
from dsfed.federated.errors import FederatedError

__all__ = ["flower_type", "from_record", "to_record"]

_TYPES = {"fit": "train", "evaluate": "evaluate"}


def flower_type(kind: str) -> str:
    """Flower's message type for a wire kind (``train``, ``evaluate`` or ``query.<kind>``)."""
    return _TYPES.get(kind, f"query.{kind}")


def to_record(kind: str, meta: dict[str, Any], payload: bytes) -> RecordDict:
    """(kind, meta, payload) -> a Flower ``RecordDict``."""
    records: dict[str, Any] = {"meta": ConfigRecord({"kind": kind, "json": meta_to_json(meta)})}
    if payload:
        records["payload"] = ArrayRecord({"bytes": Array(np.frombuffer(payload, dtype=np.uint8))})
    return RecordDict(records)


def from_record(content: RecordDict) -> tuple[str, dict[str, Any], bytes]:
    """A Flower ``RecordDict`` -> (kind, meta, payload)."""
    try:
        meta = content["meta"]
        kind, text = str(meta["kind"]), str(meta["json"])
    except KeyError:
        raise FederatedError("a Flower message without dsfed's meta record (another app on this SuperLink?)") from None
    payload = b""
    if "payload" in content:
        record = content.array_records["payload"]
        payload = record["bytes"].numpy().tobytes()
    return kind, meta_from_json(text), payload
