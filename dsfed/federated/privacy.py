"""Differential privacy of the clients' updates: fixed clipping and Gaussian noise, central or local, and the budget.

A method with ``dp`` in its params (:class:`~dsfed.federated.settings.DPConfig`) trains with client-level DP (DP-FedAvg, McMahan et
al. 2018; the FlatClip of Andrew et al. 2021, arXiv:1710.06963, as Flower's DP wrappers and mods do):

- ``central`` (Flower's ``DifferentialPrivacyServerSideFixedClipping``): the server clips each update
  ``w_k - w`` to L2 norm ``clip``, averages the clipped updates **uniformly** (one vote per client, so one
  client moves the mean by at most ``clip / m``), and adds N(0, (z·clip/m)²) to every coordinate.
- ``local`` (Flower's ``LocalDpMod``): each client clips its own update and adds N(0, (z·clip)²) before it
  leaves the hospital; the server sees only noisy updates and aggregates them as usual.

Why not Flower's own wrappers and mods: they act on Flower's parameter records, while dsfed's messages are
safetensors payloads that every engine (in process, Flower, simulation) must treat the same, and they draw
unseeded noise, while dsfed's runs reproduce and resume bit-exactly. The noise here comes from a generator
seeded by (seed, round, client or group), so a resumed run draws the same noise. The budget is Opacus's
RDP accountant for the subsampled Gaussian mechanism: noise multiplier z, sampling rate = the fraction of
clients per round, one step per round; ε at ``delta`` is what metrics.json reports.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from typing import Any

import torch

from dsfed.federated.protocol import FitResult, Weights
from dsfed.federated.settings import DPConfig
from dsfed.federated.strategies.base import DEFAULT_GROUP, Strategy
from dsfed.federated.strategies.fedavg import weighted_average

__all__ = ["LOCAL_DP", "PrivateAggregation", "apply_local_dp", "clip_and_noise", "dp_generator", "local_dp_config", "privacy_spent"]

LOCAL_DP = "local_dp"
"""The key of a round's fit config that asks the client to clip and noise its own update."""


def dp_generator(seed: int, *parts: object) -> torch.Generator:
    """A CPU generator seeded by ``seed`` and ``parts`` (round, client or group): the same draws on every engine and resume."""
    digest = hashlib.sha256(repr((seed, *parts)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def _floating(weights: Mapping[str, torch.Tensor]) -> list[str]:
    """The floating-point keys, sorted: noise is drawn key by key, and a deserialised payload's key order varies."""
    return sorted(k for k, v in weights.items() if v.dtype.is_floating_point)


def update_norm(new: Mapping[str, torch.Tensor], old: Mapping[str, torch.Tensor]) -> float:
    """L2 norm of ``new - old`` over the floating-point tensors, in float64."""
    total = sum(float((new[k].double() - old[k].double()).square().sum()) for k in _floating(old))
    return math.sqrt(total)


def clip_and_noise(new: Weights, old: Weights, clip: float, std: float, generator: torch.Generator | None) -> Weights:
    """``old + clip(new - old) + N(0, std²)`` on the floating-point tensors (integer buffers are kept from ``new``).

    Args:
        new, old: weights with the same keys; tensors of any shape.
        clip: the L2 norm the update is scaled down to when it is larger.
        std: the noise's standard deviation per coordinate (0: no noise).
        generator: the noise's generator (None only when ``std`` is 0).
    """
    scale = min(1.0, clip / max(update_norm(new, old), 1e-12))
    out = dict(new)
    for key in _floating(old):
        update = (new[key].double() - old[key].double()) * scale
        if std > 0:
            assert generator is not None
            update += torch.randn(update.shape, generator=generator, dtype=torch.float64) * std
        out[key] = (old[key].double() + update).to(old[key].dtype)
    return out


def local_dp_config(config: DPConfig, seed: int) -> dict[str, Any]:
    """The fit config entry that makes each client clip and noise its own update (``mode: local``)."""
    return {LOCAL_DP: {"clip": config.clip, "std": config.noise_multiplier * config.clip, "seed": seed}}


def apply_local_dp(fit_config: Mapping[str, Any], client: str, round: int, new: Weights, old: Weights) -> Weights:
    """On the client: its update clipped and noised when the round's config asks for it (else ``new`` as is)."""
    ask = fit_config.get(LOCAL_DP)
    if not ask:
        return new
    generator = dp_generator(int(ask["seed"]), "local", client, round)
    return clip_and_noise(new, old, float(ask["clip"]), float(ask["std"]), generator)


class PrivateAggregation(Strategy):
    """A strategy with DP: ``central`` clips, averages uniformly and noises before the inner strategy sees one
    result (the noisy mean: FedAvg keeps it, FedAdam takes it as its pseudo-gradient's source, both mere
    post-processing); ``local`` asks the clients to clip and noise and aggregates with the inner strategy."""

    def __init__(self, inner: Strategy, config: DPConfig, seed: int) -> None:
        self.inner, self.config, self.seed = inner, config, seed
        self.name = inner.name

    def initialize(self, groups: Mapping[str, Weights]) -> None:
        self.inner.initialize(groups)

    def configure_fit(self, round: int) -> dict[str, Any]:
        config = dict(self.inner.configure_fit(round))
        if self.config.mode == "local":
            config |= local_dp_config(self.config, self.seed)
        return config

    def aggregate(self, round: int, global_weights: Weights, results: list[tuple[str, FitResult]], group: str = DEFAULT_GROUP) -> Weights:
        if self.config.mode == "local":
            return self.inner.aggregate(round, global_weights, results, group=group)
        clip, m = self.config.clip, len(results)
        # one vote per client (FedAvg's mean with every count 1): one client moves the mean by at most clip / m
        clipped = [(name, FitResult(clip_and_noise(r.weights, global_weights, clip, 0.0, None), 1)) for name, r in results]
        mean = weighted_average(round, clipped)
        std = self.config.noise_multiplier * clip / m   # Flower's compute_stdv
        generator = dp_generator(self.seed, "central", group, round)
        noisy = dict(mean)
        for key in _floating(mean) if std > 0 else []:   # in a fixed order: the noise is drawn key by key
            noise = torch.randn(mean[key].shape, generator=generator, dtype=torch.float64) * std
            noisy[key] = (mean[key].double() + noise).to(mean[key].dtype)
        return self.inner.aggregate(round, global_weights, [("dp-mean", FitResult(noisy, 1))], group=group)

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state)

    def __repr__(self) -> str:
        return f"PrivateAggregation({self.inner!r}, {self.config!r})"


def privacy_spent(config: DPConfig, rounds: int, sample_rate: float) -> dict[str, Any]:
    """The (ε, δ) budget after ``rounds`` rounds at ``sample_rate`` (Opacus's RDP accountant); ε is
    null (no guarantee) without noise."""
    spent: dict[str, Any] = {"mode": config.mode, "clip": config.clip, "noise_multiplier": config.noise_multiplier,
                             "delta": config.delta, "rounds": rounds, "sample_rate": sample_rate, "accountant": "rdp (opacus)"}
    if config.noise_multiplier == 0 or rounds == 0:
        return spent | {"epsilon": None if rounds else 0.0}
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    for _ in range(rounds):
        accountant.step(noise_multiplier=config.noise_multiplier, sample_rate=sample_rate)
    return spent | {"epsilon": float(accountant.get_epsilon(config.delta))}
