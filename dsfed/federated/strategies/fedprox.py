"""FedProx (Li et al. 2020): FedAvg on the server, a proximal term ``mu/2 ||w - w_g||^2`` in each client's loss."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from dsfed.federated.strategies.fedavg import FedAvg

__all__ = ["FedProx", "PROX_MU", "proximal_term"]

PROX_MU = "prox_mu"
"""The key of ``mu`` in the fit config clients receive."""


class FedProx(FedAvg):
    """Server side identical to FedAvg; every client gets ``{"prox_mu": mu}`` and adds :func:`proximal_term`."""

    name = "fedprox"

    def __init__(self, mu: float = 0.01) -> None:
        if mu < 0:
            raise ValueError(f"FedProx mu must be >= 0, got {mu}")
        self.mu = float(mu)

    def configure_fit(self, round: int) -> dict[str, Any]:
        """``{"prox_mu": mu}``."""
        return {PROX_MU: self.mu}


def proximal_term(
    model_params: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]],
    global_params: Mapping[str, torch.Tensor],
    mu: float,
) -> torch.Tensor:
    """``mu / 2 * sum ||w - w_g||^2`` over the parameters present in both, differentiable in ``w``.

    Args:
        model_params: the client's parameters by name (``dict(model.named_parameters())`` or the iterator
            itself). Names missing from ``global_params`` (local keys) are skipped.
        global_params: the global weights received this round (treated as constants).
        mu: proximal strength; 0 gives a zero tensor.

    Its gradient with respect to ``w`` is ``mu * (w - w_g)``. Raises ``ValueError`` when no name matches
    (usually a prefix mismatch such as ``module.``), since the term would silently be zero.
    """
    pairs = list(model_params.items() if isinstance(model_params, Mapping) else model_params)
    matched = [(w, global_params[name]) for name, w in pairs if name in global_params]
    if pairs and not matched:
        raise ValueError(f"proximal_term: none of the model's parameters ({pairs[0][0]}, ...) is in the global weights")
    if not matched:
        return torch.zeros(())
    if mu == 0:
        return torch.zeros((), device=matched[0][0].device, dtype=matched[0][0].dtype)
    total = sum((w - w_g.detach().to(w.device, w.dtype)).pow(2).sum() for w, w_g in matched)
    return total * (mu / 2)
