"""Weights <-> bytes with safetensors: the only thing that crosses between server and clients."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from safetensors.torch import load, save

from dsfed.federated.protocol import Weights

__all__ = ["payload_size", "to_bytes", "from_bytes"]


def to_bytes(weights: Mapping[str, torch.Tensor]) -> bytes:
    """Serialise ``weights`` with ``safetensors.torch.save`` (detached, CPU, contiguous clones; no metadata)."""
    return save({name: tensor.detach().to("cpu").contiguous().clone() for name, tensor in weights.items()})


def from_bytes(payload: bytes) -> Weights:
    """Deserialise what :func:`to_bytes` wrote into fresh CPU tensors that share nothing with the sender.

    A payload of another codec (half floats, compressed: :mod:`dsfed.federated.codec`) is decoded to the
    float32 weights it stands for; one that holds deltas needs its reference (``codec.decode``) and raises."""
    from dsfed.federated.codec import decode, is_plain

    if is_plain(payload):
        return dict(load(payload))
    return decode(payload)


def payload_size(weights: Mapping[str, torch.Tensor]) -> int:
    """Exact size in bytes of ``weights`` as :func:`to_bytes` serialises them."""
    return len(to_bytes(weights))
