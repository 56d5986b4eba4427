"""Flower's simulation engine for real: the same ServerApp and ClientApp, every client a simulated node
(Ray actors) of a private SuperLink the stage starts; weights, ledger and metrics equal the in-process run's.
The method runs with local DP and the payload codec (fp16 down, bf16 deltas up, zstd), so the clipping and
seeded noise at the client and the codec's reply-in-kind are checked over Flower's messages too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from dsfed.config import load_params
from dsfed.federated.ledger import read_ledger
from dsfed.stages.federated_outputs import train_method, write_method_outputs
from dsfed.stages.federated_run import run_method
from tests.federated.project import tiny_raw

pytestmark = pytest.mark.slow
METHOD = {"fedunet": {"model": "unet", "input_size": 32, "dp": {"mode": "local", "clip": 0.5, "noise_multiplier": 0.3}}}


def test_two_rounds_on_the_simulation_engine_equal_the_in_process_run(project: Path, stores: Path) -> None:
    raw = tiny_raw(METHOD, rounds=2)
    raw["federated"] |= {"engine": "simulation", "flower": {"client_cpus": 1, "timeout_s": 300, "wait_nodes_s": 60},
                         "codec": {"down": "fp16", "up": "bf16", "delta": True, "compress": "zstd"}}
    (project / "params.yaml").write_text(yaml.safe_dump(raw))
    params = load_params(project / "params.yaml")
    metrics = train_method(params, project / "params.yaml", "fedunet", stores)

    local = run_method(params, "fedunet", stores, project / "inprocess", progress=False)
    out = stores / "federated/fedunet"
    saved = load_file(str(out / "model.safetensors"))
    assert saved.keys() == local.selected.keys()
    assert all(torch.equal(saved[k], v) for k, v in local.selected.items())          # bit-identical
    assert metrics == write_method_outputs(local, project / "inprocess")
    assert metrics["privacy"]["mode"] == "local" and metrics["privacy"]["epsilon"] > 0
    strip = lambda rows: [(r["round"], r["client"], r["direction"], r["what"], r["bytes"]) for r in rows]  # noqa: E731
    assert strip(read_ledger(out / "ledger.csv")) == strip(read_ledger(project / "inprocess/ledger.csv"))
    updates = [r["bytes"] for r in read_ledger(out / "ledger.csv") if r["what"] == "update"]
    assert updates and max(updates) < 0.5 * sum(v.numel() * 4 for v in local.selected.values())   # bf16 deltas, compressed
    # each simulated node kept its state where the in-process engine keeps a client's
    assert {p.name for p in (out / "client-state").iterdir()} >= {"a", "b", "h"}
    assert all((out / "client-state" / c / "setup.json").is_file() for c in ("a", "b", "h"))


def test_secagg_on_the_simulation_engine_gives_fedavg_within_quantisation(project: Path, stores: Path) -> None:
    """Flower's SecAgg+ workflow and mod between real Flower processes: the server's sum is plain FedAvg's
    within the protocol's rounding, and the ledger holds the protocol's messages instead of the updates."""
    from dsfed.federated.secure import secure_tolerance

    raw = tiny_raw({"fedunet": {"model": "unet", "input_size": 32, "secagg": {}}}, rounds=1)
    raw["federated"] |= {"engine": "simulation", "flower": {"client_cpus": 1, "timeout_s": 300, "wait_nodes_s": 60}}
    (project / "params.yaml").write_text(yaml.safe_dump(raw))
    train_method(load_params(project / "params.yaml"), project / "params.yaml", "fedunet", stores)

    raw["federated"]["engine"] = "inprocess"
    del raw["federated"]["methods"]["fedunet"]["secagg"]
    (project / "plain.yaml").write_text(yaml.safe_dump(raw))
    plain = run_method(load_params(project / "plain.yaml"), "fedunet", stores, project / "plain", progress=False)
    rows = read_ledger(stores / "federated/fedunet/ledger.csv")
    assert {r["client"] for r in rows if r["what"] == "masked_update"} == {"a", "b"} and not any(r["what"] == "update" for r in rows)
    metrics = json.loads((stores / "federated/fedunet/metrics.json").read_text())
    assert metrics["selected_round"] == plain.selected_round == 1
    saved = load_file(str(stores / "federated/fedunet/model.safetensors"))
    bound = secure_tolerance(8.0, 2**22, {"a": 6, "b": 6})
    worst = max(float((saved[k].double() - v.double()).abs().max()) for k, v in plain.selected.items() if v.dtype.is_floating_point)
    assert 0 < worst <= bound, (worst, bound)
