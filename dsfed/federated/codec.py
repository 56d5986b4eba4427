"""The payload codec: the float type weights travel in, updates as deltas, and lossless compression.

A payload stays a safetensors file (the only format that crosses between server and clients). The codec
changes what is in it and how it is wrapped:

- ``dtype``: float32 tensors are sent as float16 or bfloat16 and read back as float32 (other tensors,
  integer buffers or weights already in a half type, travel as they are and are named in the metadata).
- ``delta``: a client's update travels as its weights minus the weights it received; the server adds it to
  the float32 weights it sent. The rounding of the download is not carried into the server's weights, and
  a delta (small, of one round) keeps its relative precision in a half type where absolute weights lose the
  sub-ulp part of a round's change. bfloat16 suits deltas: float16's range flushes updates under ~6e-8 to
  zero.
- ``compress``: the safetensors bytes through Blosc (byte shuffle of each element's bytes, then zstd),
  from numcodecs, which the stores already use; framed by :data:`MAGIC` so a reader tells the two apart.

The codec of a payload is in its metadata (``dsfed.codec``); a download may name the codec the client's
reply must use (``dsfed.reply``), so nodes need no settings of their own. The ledger counts the encoded
bytes: what crosses. The plain codec writes exactly what :func:`dsfed.federated.serialize.to_bytes` writes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import torch
from safetensors.torch import load, save

from dsfed.federated.errors import FederatedError
from dsfed.federated.protocol import Weights
from dsfed.federated.serialize import to_bytes
from dsfed.io import canonical_safetensors

__all__ = ["CODEC_KEY", "DTYPES", "MAGIC", "PLAIN", "REPLY_KEY", "Codec", "decode", "encode", "is_plain", "reply_codec"]

MAGIC = b"DSFZ\x01"
"""The first bytes of a compressed payload (a safetensors file starts with its header length, never these)."""
CODEC_KEY, REPLY_KEY, AS_IS_KEY = "dsfed.codec", "dsfed.reply", "dsfed.as_is"
DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
"""Codec float type name -> torch dtype (the single source of the names)."""


@dataclass(frozen=True)
class Codec:
    """How one payload is encoded.

    Attributes:
        dtype: ``fp32``, ``fp16`` or ``bf16``: the type float32 tensors travel in.
        delta: the payload holds weights minus a reference both sides know (a client's received weights).
        compress: ``none`` or ``zstd`` (Blosc byte shuffle + zstd, lossless).
        level: the zstd level (1-9).
    """

    dtype: Literal["fp32", "fp16", "bf16"] = "fp32"
    delta: bool = False
    compress: Literal["none", "zstd"] = "none"
    level: int = 5

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise FederatedError(f"payload codec dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")
        if self.compress not in ("none", "zstd"):
            raise FederatedError(f"payload codec compress {self.compress!r} is not one of none, zstd")
        if not 1 <= self.level <= 9:
            raise FederatedError(f"payload codec level must be in 1..9, got {self.level}")

    @property
    def plain(self) -> bool:
        """Float32, whole weights, uncompressed: the bytes of ``to_bytes``."""
        return self.dtype == "fp32" and not self.delta and self.compress == "none"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Codec:
        try:
            return cls(**json.loads(text))
        except (TypeError, ValueError) as exc:
            raise FederatedError(f"payload names an unknown codec {text!r} ({exc}): a node of another dsfed version?") from exc


PLAIN = Codec()


def encode(weights: Mapping[str, torch.Tensor], codec: Codec = PLAIN, reference: Mapping[str, torch.Tensor] | None = None,
           reply: Codec | None = None) -> bytes:
    """``weights`` as a payload in ``codec``; ``reply``: the codec the receiver must answer in.

    Args:
        weights: name -> tensor (any device; copies are made).
        codec: how to encode.
        reference: with ``codec.delta``, the weights the deltas are taken from (the same keys' float32 tensors).
        reply: written into the metadata for a client to encode its update with (:func:`reply_codec`).
    """
    if codec.plain and reply is None:
        return to_bytes(weights)
    half = DTYPES[codec.dtype]
    tensors: dict[str, torch.Tensor] = {}
    as_is: list[str] = []
    for name, tensor in weights.items():
        value = tensor.detach().to("cpu")
        if value.dtype != torch.float32:
            as_is += [name] if value.is_floating_point() else []
            tensors[name] = value.contiguous().clone()
            continue
        if codec.delta:
            if reference is None or name not in reference:
                raise FederatedError(f"a delta payload needs the reference weights of {name!r}")
            value = value - reference[name].detach().to("cpu", torch.float32)
        tensors[name] = value.to(half).contiguous()
    metadata = {CODEC_KEY: codec.to_json(), AS_IS_KEY: json.dumps(sorted(as_is))}
    if reply is not None:
        metadata[REPLY_KEY] = reply.to_json()
    blob = canonical_safetensors(save(tensors, metadata=metadata))
    return _compress(blob, codec) if codec.compress == "zstd" else blob


def _compress(blob: bytes, codec: Codec) -> bytes:
    """``MAGIC`` + Blosc(zstd, byte shuffle over the codec's element size) of ``blob``."""
    from numcodecs import Blosc

    size = DTYPES[codec.dtype].itemsize
    data = np.frombuffer(blob, dtype=np.uint8)
    typed = data.view(f"V{size}") if len(blob) % size == 0 else data
    return MAGIC + bytes(Blosc(cname="zstd", clevel=codec.level, shuffle=Blosc.SHUFFLE).encode(typed))


def _safetensors_bytes(payload: bytes) -> bytes:
    if not payload.startswith(MAGIC):
        return payload
    from numcodecs import Blosc

    try:
        return bytes(Blosc().decode(payload[len(MAGIC):]))
    except (RuntimeError, ValueError) as exc:
        raise FederatedError(f"a compressed payload could not be decompressed ({exc})") from exc


def _metadata(blob: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file (empty when it has none)."""
    try:
        size = int.from_bytes(blob[:8], "little")
        header = json.loads(blob[8 : 8 + size])
    except (ValueError, UnicodeDecodeError) as exc:
        raise FederatedError(f"a payload is not a safetensors file ({exc})") from exc
    return dict(header.get("__metadata__") or {}) if isinstance(header, dict) else {}


def is_plain(payload: bytes) -> bool:
    """Whether ``payload`` is plain safetensors (no codec in its metadata, not compressed)."""
    return not payload.startswith(MAGIC) and CODEC_KEY not in _metadata(payload)


def reply_codec(payload: bytes) -> Codec | None:
    """The codec a download asks its receiver to answer in (None: plain bytes)."""
    text = _metadata(_safetensors_bytes(payload)).get(REPLY_KEY)
    return Codec.from_json(text) if text else None


def decode(payload: bytes, reference: Mapping[str, torch.Tensor] | None = None) -> Weights:
    """The weights of a payload of any codec, float32 where they were float32 when encoded.

    Args:
        payload: what :func:`encode` (or ``to_bytes``) wrote.
        reference: for a delta payload, the weights the deltas were taken from.

    Raises:
        FederatedError: the payload cannot be read, or it holds deltas and no (or a mismatched) reference is given.
    """
    blob = _safetensors_bytes(payload)
    tensors = dict(load(blob))
    meta = _metadata(blob)
    if CODEC_KEY not in meta:
        return tensors
    codec = Codec.from_json(meta[CODEC_KEY])
    as_is = set(json.loads(meta.get(AS_IS_KEY, "[]")))
    out: Weights = {}
    for name, tensor in tensors.items():
        if not tensor.is_floating_point() or name in as_is:
            out[name] = tensor
            continue
        value = tensor.to(torch.float32)
        if codec.delta:
            if reference is None or name not in reference:
                raise FederatedError(f"a delta payload arrived without the weights it was taken from ({name!r})")
            base = reference[name].detach().to("cpu", torch.float32)
            if base.shape != value.shape:
                raise FederatedError(f"a delta payload's {name} has shape {tuple(value.shape)}, its reference {tuple(base.shape)}")
            value = base + value
        out[name] = value
    return out
