"""Secure aggregation (SecAgg+): what a client hands the protocol, and what the server rebuilds from the sum.

With ``federated.methods.<m>.secagg`` the server never sees one client's update. Each client splits its
update into the part SecAgg+ masks (every floating-point tensor, as its difference from the round's global
weights, in a fixed key order) and a clear part (integer buffers such as BatchNorm's step counter, which
FedAvg takes the maximum of and cannot be summed). The engine's protocol (Flower's ``SecAggPlusWorkflow``
and ``secaggplus_mod``, :mod:`dsfed.federated.flower.secagg`) returns only the sample-weighted mean of the
masked parts; :func:`rebuild` turns it back into weights for the strategy: the global weights plus the mean
difference, with each client's own clear part. Every client's rebuilt weights share the same floating-point
tensors, so the strategy's weighted mean of them is that mean itself: the rounds loop, checkpoints and
resume stay the same code as without secure aggregation.

SecAgg+ clips every entry to ``clipping_range`` and quantises it stochastically; the client seeds that
rounding from (run, round, client), so a run and its resume give the same bits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from dsfed.data.splits import stable_seed
from dsfed.federated.engines.base import FitReply
from dsfed.federated.errors import FederatedError
from dsfed.federated.protocol import Weights

__all__ = ["Layout", "SecureRound", "masked_part", "quantization_seed", "rebuild", "secure_tolerance"]

Layout = list[tuple[str, tuple[int, ...]]]
"""The masked tensors' names and shapes, in the order of the masked arrays."""


@dataclass
class SecureRound:
    """What an engine's secure fit returns: the mean of the masked parts and each client's clear reply.

    Attributes:
        mean: the sample-weighted mean of the clients' masked arrays (float64, in ``layout`` order); None
            when the protocol could not finish (every reply then has ``error`` set).
        layout: the masked tensors' names and shapes (every client's must agree).
        replies: client -> its reply: ``payload`` = the clear part (safetensors), ``num_samples``, ``metrics``;
            or ``error`` for a client that dropped out.
        traffic: ``(client, direction, what, bytes)`` for every message the protocol exchanged.
    """

    mean: list[np.ndarray] | None
    layout: Layout
    replies: dict[str, FitReply]
    traffic: list[tuple[str, str, str, int]] = field(default_factory=list)


def masked_part(update: Weights, start: Weights, clipping_range: float, client: str, round: int) -> tuple[Layout, list[np.ndarray], Weights]:
    """Split a client's ``update`` into what SecAgg+ masks and what travels in the clear.

    Args:
        update: the client's new shared weights.
        start: the round's global weights it started from (same keys).
        clipping_range: SecAgg+ clips every entry to this; an update beyond it raises (the round would be wrong).

    Returns:
        ``(layout, arrays, clear)``: the floating-point tensors' names and shapes in sorted order, their
        differences from ``start`` as float64 arrays, and the other tensors unchanged.

    Raises:
        FederatedError: keys differ from ``start``, or an entry of the difference exceeds ``clipping_range``.
    """
    if set(update) != set(start):
        raise FederatedError(f"client {client}: round {round}: its update's keys differ from the global weights'")
    layout: Layout = []
    arrays: list[np.ndarray] = []
    clear: Weights = {}
    for key in sorted(update):
        tensor = update[key]
        if not tensor.dtype.is_floating_point:
            clear[key] = tensor
            continue
        delta = tensor.detach().to("cpu", torch.float64) - start[key].detach().to("cpu", torch.float64)
        peak = float(delta.abs().max()) if delta.numel() else 0.0
        if not peak <= clipping_range:
            raise FederatedError(f"client {client}: round {round}: its update of {key} reaches {peak:.4g}, beyond secagg.clipping_range "
                                 f"{clipping_range:g} (SecAgg+ would clip it); raise secagg.clipping_range")
        layout.append((key, tuple(tensor.shape)))
        arrays.append(delta.numpy())
    return layout, arrays, clear


def rebuild(start: Weights, layout: Sequence[tuple[str, Sequence[int]]], mean: Sequence[np.ndarray], clear: Weights) -> Weights:
    """A client's weights as the strategy gets them: ``start`` plus the mean difference, and its own clear part.

    Shapes: ``mean[i]`` holds ``prod(layout[i][1])`` float64 values; the result has ``start``'s keys and dtypes.
    """
    if len(mean) != len(layout):
        raise FederatedError(f"secure aggregation returned {len(mean)} arrays for {len(layout)} tensors")
    out: Weights = {}
    for (key, shape), values in zip(layout, mean, strict=True):
        if key not in start:
            raise FederatedError(f"secure aggregation returned {key}, which the global weights do not have")
        base = start[key]
        delta = torch.from_numpy(np.asarray(values, dtype=np.float64).reshape(tuple(shape)))
        out[key] = (base.detach().to("cpu", torch.float64) + delta).to(base.dtype)
    for key, tensor in clear.items():
        out[key] = tensor
    missing = sorted(set(start) - set(out))
    if missing:
        raise FederatedError(f"secure aggregation left out {missing[:3]}")
    return out


def quantization_seed(run: str, round: int, client: str) -> int:
    """The seed of a client's stochastic rounding in SecAgg+ (:func:`~dsfed.data.splits.stable_seed` of run, round, client)."""
    return stable_seed(run, round, client, "secagg")


def secure_tolerance(clipping_range: float, quantization_range: int, counts: Mapping[str, int]) -> float:
    """The largest difference per entry between SecAgg+'s weighted mean and the exact one, for sample ``counts``.

    Each client's weighted entry is rounded to a step of ``2 * clipping_range / quantization_range`` and its
    weight to ``1 / quantization_range`` of the largest count; the sum of the rounding errors is divided by the
    total weight. A bound for tests and for the note in the ledger, not a guarantee against float error.
    """
    largest = max(counts.values())
    total = sum(counts.values()) / largest
    step = 2 * clipping_range / quantization_range
    weight_error = clipping_range * len(counts) / quantization_range / total
    return len(counts) * step / total + weight_error
