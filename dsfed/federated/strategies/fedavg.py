"""FedAvg (McMahan et al. 2017): the global weights become the sample-weighted mean of the clients' weights."""

from __future__ import annotations

import logging

import torch

from dsfed.federated.errors import FederatedError
from dsfed.federated.protocol import FitResult, Weights
from dsfed.federated.strategies.base import DEFAULT_GROUP, Strategy

__all__ = ["FedAvg", "weighted_average"]

log = logging.getLogger(__name__)


def _check_keys(round: int, results: list[tuple[str, FitResult]]) -> list[str]:
    first_name, first = results[0]
    keys = list(first.weights)
    for name, result in results[1:]:
        if set(result.weights) != set(keys):
            extra = sorted(set(result.weights) - set(keys))[:3]
            missing = sorted(set(keys) - set(result.weights))[:3]
            raise FederatedError(f"round {round}: {name} sent other keys than {first_name} (extra {extra}, missing {missing})")
        for key in keys:
            if result.weights[key].shape != first.weights[key].shape:
                raise FederatedError(f"round {round}: {name} sent {key} with shape {tuple(result.weights[key].shape)}, {first_name} {tuple(first.weights[key].shape)}")
    return keys


def weighted_average(round: int, results: list[tuple[str, FitResult]]) -> Weights:
    """Sample-weighted mean of the clients' weights, key by key.

    Floating-point tensors are averaged in float64 (in the order of ``results``) and cast back to their
    dtype. Integer and bool buffers (e.g. BatchNorm's ``num_batches_tracked``) are not averaged: they
    take the **maximum** over clients (order-independent; for a step counter, the most steps any
    client has seen). Raises :class:`FederatedError` if clients disagree on keys or shapes, or if no
    client reported a training sample.
    """
    if not results:
        raise FederatedError(f"round {round}: no client results to aggregate")
    keys = _check_keys(round, results)
    counts = [int(r.num_samples) for _, r in results]
    if any(c < 0 for c in counts) or sum(counts) == 0:
        raise FederatedError(f"round {round}: clients reported sample counts {dict(zip([n for n, _ in results], counts))}; need >= 0 and a positive total")
    total = float(sum(counts))
    out: Weights = {}
    for key in keys:
        tensors = [r.weights[key] for _, r in results]
        dtype = tensors[0].dtype
        if dtype.is_floating_point or dtype.is_complex:
            acc_dtype = torch.complex128 if dtype.is_complex else torch.float64
            acc = torch.zeros(tensors[0].shape, dtype=acc_dtype)
            for count, tensor in zip(counts, tensors):
                acc += tensor.detach().to("cpu", acc_dtype) * (count / total)
            out[key] = acc.to(dtype)
        else:
            out[key] = torch.stack([t.detach().to("cpu") for t in tensors]).amax(dim=0)
    return out


class FedAvg(Strategy):
    """Federated averaging: ``w = sum_k n_k w_k / sum_k n_k`` over the clients that finished the round."""

    name = "fedavg"

    def aggregate(self, round: int, global_weights: Weights, results: list[tuple[str, FitResult]], group: str = DEFAULT_GROUP) -> Weights:
        """Weighted mean of the results (see :func:`weighted_average`); ``global_weights`` is not used."""
        return weighted_average(round, results)
