"""Client-level DP: clipping bounds what one client can move, the noise has the stated size and repeats on
resume, local DP happens at the client, and the reported ε is the RDP accountant's."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from dsfed.config import parse_params
from dsfed.federated import FedAvg, FitResult, RoundsConfig, run_rounds
from dsfed.federated.engines import FitTask, InProcessEngine
from dsfed.federated.privacy import PrivateAggregation, clip_and_noise, dp_generator, privacy_spent, update_norm
from dsfed.federated.serialize import from_bytes, to_bytes
from dsfed.federated.settings import DPConfig
from dsfed.settings import ConfigError
from dsfed.stages.federated_run import run_method
from tests.federated.project import tiny_raw
from tests.federated.toy import federation_of, initial_weights, toy_clients


def _weights(scale: float, n: int = 10_000) -> dict[str, torch.Tensor]:
    return {"w": torch.full((n,), scale), "steps": torch.tensor(3)}


def test_clipping_scales_a_large_update_down_to_the_norm_and_keeps_a_small_one() -> None:
    old = _weights(0.0)
    big = clip_and_noise(_weights(1.0), old, clip=2.0, std=0.0, generator=None)
    assert update_norm(big, old) == pytest.approx(2.0) and big["steps"].item() == 3   # integer buffers untouched
    small = clip_and_noise(_weights(0.001), old, clip=2.0, std=0.0, generator=None)
    assert torch.equal(small["w"], _weights(0.001)["w"])


def test_central_dp_averages_clipped_updates_uniformly_and_adds_noise_of_z_clip_over_m() -> None:
    old = _weights(0.0, n=200_000)
    results = [(f"c{i}", FitResult(_weights(float(i + 1), n=200_000), num_samples=10 ** i)) for i in range(4)]
    exact = PrivateAggregation(FedAvg(), DPConfig(clip=1.0, noise_multiplier=0.0), seed=0).aggregate(1, old, results)
    # every update clipped to norm 1 and averaged with one vote each: the mean has norm 1 whatever the sample counts
    assert update_norm(exact, old) == pytest.approx(1.0)
    noisy = PrivateAggregation(FedAvg(), DPConfig(clip=1.0, noise_multiplier=2.0), seed=0).aggregate(1, old, results)
    noise = noisy["w"].double() - exact["w"].double()
    assert noise.std().item() == pytest.approx(2.0 * 1.0 / 4, rel=0.01)   # z * clip / m
    again = PrivateAggregation(FedAvg(), DPConfig(clip=1.0, noise_multiplier=2.0), seed=0).aggregate(1, old, results)
    assert torch.equal(again["w"], noisy["w"])                                        # seeded: a resume draws the same
    other_round = PrivateAggregation(FedAvg(), DPConfig(clip=1.0, noise_multiplier=2.0), seed=0).aggregate(2, old, results)
    assert not torch.equal(other_round["w"], noisy["w"])


def test_local_dp_clips_and_noises_at_the_client_before_the_update_leaves(tmp_path: Path) -> None:
    clients = toy_clients(1)
    engine = InProcessEngine(clients, state_root=tmp_path)
    start = initial_weights()
    strategy = PrivateAggregation(FedAvg(), DPConfig(mode="local", clip=1e-3, noise_multiplier=0.0), seed=0)
    reply = engine.fit({"site_a": FitTask("run", 1, to_bytes(start), strategy.configure_fit(1), committed=0)})["site_a"]
    sent = from_bytes(reply.payload)
    assert update_norm(sent, start) == pytest.approx(1e-3, rel=1e-3)   # trained far, sent only a clipped step
    plain = InProcessEngine(toy_clients(1), state_root=tmp_path / "plain").fit({"site_a": FitTask("run", 1, to_bytes(start), {}, committed=0)})
    assert update_norm(from_bytes(plain["site_a"].payload), start) > 1e-2


def test_a_dp_run_reproduces_and_its_aggregate_moves_at_most_the_clip() -> None:
    config = RoundsConfig(rounds=2, min_clients=2, seed=0)
    runs = []
    for _ in range(2):
        strategy = PrivateAggregation(FedAvg(), DPConfig(clip=0.05, noise_multiplier=0.5), seed=7)
        torch.manual_seed(0)   # the toy clients train on the global RNGs
        np.random.seed(0)
        random.seed(0)
        runs.append(run_rounds(federation_of(toy_clients(3)), strategy, initial_weights(), config, progress=False).weights)
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    clipped = run_rounds(federation_of(toy_clients(3)), PrivateAggregation(FedAvg(), DPConfig(clip=0.05, noise_multiplier=0.0), seed=7),
                         initial_weights(), RoundsConfig(rounds=1, min_clients=2), progress=False).weights
    assert update_norm(clipped, initial_weights()) <= 0.05 + 1e-6


def test_the_budget_is_the_rdp_accountants_and_grows_with_rounds() -> None:
    one = privacy_spent(DPConfig(noise_multiplier=1.0, delta=1e-5), rounds=1, sample_rate=1.0)["epsilon"]
    # the Gaussian mechanism without subsampling: RDP alpha / (2 z^2), converted at delta (Opacus's conversion is at least
    # as tight as the classic eps = rdp + log(1/delta) / (alpha - 1), minimised over its alpha grid)
    classic = min(a / 2 + math.log(1e5) / (a - 1) for a in [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)))
    assert 0 < one <= classic + 1e-9
    eight = privacy_spent(DPConfig(noise_multiplier=1.0, delta=1e-5), rounds=8, sample_rate=1.0)["epsilon"]
    sampled = privacy_spent(DPConfig(noise_multiplier=1.0, delta=1e-5), rounds=8, sample_rate=0.5)["epsilon"]
    assert one < eight and sampled < eight
    assert privacy_spent(DPConfig(noise_multiplier=0.0), rounds=3, sample_rate=1.0)["epsilon"] is None   # no noise, no guarantee


def test_dp_is_refused_for_the_pooled_baseline(project: Path) -> None:
    raw = tiny_raw({"pooled": {"model": "unet", "strategy": "centralized", "dp": {"clip": 1.0}}})
    with pytest.raises(ConfigError, match="dp: the centralized baseline"):
        parse_params(raw, root=project)


def test_a_dp_method_reports_its_budget_in_its_metrics(project: Path, stores: Path) -> None:
    dp = {"mode": "central", "clip": 0.5, "noise_multiplier": 1.1, "delta": 1e-5}
    params = parse_params(tiny_raw({"dp": {"model": "unet", "input_size": 32, "dp": dp}}, rounds=2), root=project)
    run = run_method(params, "dp", stores, project / "out", progress=False)
    spent = run.extra["privacy"]
    assert spent["rounds"] == 2 and spent["sample_rate"] == 1.0 and spent["mode"] == "central"
    assert spent["epsilon"] == pytest.approx(privacy_spent(DPConfig(**dp), 2, 1.0)["epsilon"]) and spent["epsilon"] > 0
    assert dp_generator(0, "x").initial_seed() == dp_generator(0, "x").initial_seed()
