"""Weights <-> safetensors bytes: exact round trip, fresh storage, awkward tensors."""

from __future__ import annotations

import torch

from dsfed.federated import from_bytes, to_bytes


def test_round_trip_is_exact_and_shares_nothing() -> None:
    base = torch.randn(4, 6)
    weights = {
        "a": base,
        "view": base.t(),  # non-contiguous view of the same storage
        "half": torch.randn(3, dtype=torch.bfloat16),
        "count": torch.tensor(7),
        "param": torch.nn.Parameter(torch.ones(2)),
    }
    back = from_bytes(to_bytes(weights))
    assert set(back) == set(weights)
    assert all(torch.equal(back[k], weights[k].detach()) and back[k].dtype == weights[k].dtype for k in weights)
    back["a"].add_(1)
    assert not torch.equal(back["a"], base)
    assert to_bytes(weights) == to_bytes(dict(reversed(list(weights.items()))))  # deterministic bytes
    assert from_bytes(to_bytes({})) == {}
