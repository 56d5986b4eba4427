"""FedAdam (Reddi et al. 2021, "Adaptive Federated Optimization"): Adam on the server over the FedAvg pseudo-gradient."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch

from dsfed.federated.protocol import FitResult, Weights
from dsfed.federated.strategies.base import DEFAULT_GROUP, Strategy
from dsfed.federated.strategies.fedavg import weighted_average

__all__ = ["FedAdam"]

log = logging.getLogger(__name__)


def _state_dtype(dtype: torch.dtype) -> torch.dtype:
    """Moments are kept in at least float32 (bf16/fp16 weights would lose the small updates)."""
    return torch.promote_types(dtype, torch.float32)


class FedAdam(Strategy):
    """Server-side Adam without bias correction (Reddi et al. 2021, Algorithm 2).

    Per round, with ``avg`` the sample-weighted mean of the clients' weights:
    ``delta = avg - global``; ``m = b1 m + (1 - b1) delta``; ``v = b2 v + (1 - b2) delta^2``;
    ``global = global + eta * m / (sqrt(v) + tau)``. ``m`` and ``v`` start at zero and are checkpointed.
    Integer / bool buffers are not optimised: they take the averaged value (FedAvg's maximum).
    """

    name = "fedadam"

    def __init__(self, eta: float = 1e-2, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3) -> None:
        self.eta, self.beta1, self.beta2, self.tau = float(eta), float(beta1), float(beta2), float(tau)
        self._m: dict[str, Weights] = {}  # per weight group
        self._v: dict[str, Weights] = {}
        self._step = 0

    def initialize(self, groups: Mapping[str, Weights]) -> None:
        """Zero moments shaped like the floating-point entries of every group's weights."""
        self._m, self._v = {}, {}
        for group, weights in groups.items():
            self._start(group, weights)
        self._step = 0

    def _start(self, group: str, global_weights: Weights) -> None:
        self._m[group] = {k: torch.zeros(t.shape, dtype=_state_dtype(t.dtype)) for k, t in global_weights.items() if t.dtype.is_floating_point}
        self._v[group] = {k: torch.zeros_like(t) for k, t in self._m[group].items()}

    def aggregate(self, round: int, global_weights: Weights, results: list[tuple[str, FitResult]], group: str = DEFAULT_GROUP) -> Weights:
        """One server Adam step from ``global_weights`` towards the clients' weighted mean (moments of ``group``)."""
        avg = weighted_average(round, results)
        if group not in self._m:
            self._start(group, global_weights)
        m, v = self._m[group], self._v[group]
        out: Weights = {}
        for key, mean in avg.items():
            if key not in m:
                out[key] = mean
                continue
            current = global_weights[key].detach().to("cpu")
            dtype = m[key].dtype
            delta = mean.to(dtype) - current.to(dtype)
            m[key].mul_(self.beta1).add_(delta, alpha=1 - self.beta1)
            v[key].mul_(self.beta2).addcmul_(delta, delta, value=1 - self.beta2)
            update = m[key] / (v[key].sqrt() + self.tau)
            out[key] = (current.to(dtype) + self.eta * update).to(current.dtype)
        self._step += 1
        return out

    def state_dict(self) -> dict[str, Any]:
        """``{"m": {group: {...}}, "v": {group: {...}}, "step": n}``."""
        return {"m": {g: dict(t) for g, t in self._m.items()}, "v": {g: dict(t) for g, t in self._v.items()}, "step": self._step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the moments and step count."""
        self._m = {g: {k: t.clone() for k, t in ts.items()} for g, ts in state["m"].items()}
        self._v = {g: {k: t.clone() for k, t in ts.items()} for g, ts in state["v"].items()}
        self._step = int(state["step"])
