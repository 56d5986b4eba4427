"""The in-process rounds loop: sampling, failing clients, min_clients, checkpoints, resume after SIGKILL."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dsfed.errors import DsfedError
from dsfed.federated import (
    CheckpointError,
    FedAvg,
    FederatedError,
    Ledger,
    RoundsConfig,
    build_strategy,
    from_bytes,
    run_rounds,
    sample_clients,
)
from dsfed.federated.checkpoint import latest_checkpoint
from tests.federated.toy import BN_LOCAL, PAUSE_MARKER, PAUSE_ROUND, federation_of, initial_weights, toy_clients

REPO = Path(__file__).resolve().parents[2]


def _seed_all() -> None:
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)


def test_sampling_is_seeded_per_round_and_respects_fraction_and_min_clients() -> None:
    names = [f"c{i}" for i in range(10)]
    cfg = RoundsConfig(rounds=5, fraction=0.3, min_clients=2, seed=1)
    picks = [sample_clients(names, cfg, r) for r in range(1, 6)]
    assert all(len(p) == 3 and p == sorted(p, key=names.index) for p in picks)
    assert picks == [sample_clients(names, cfg, r) for r in range(1, 6)]  # deterministic in (seed, round)
    assert len({tuple(p) for p in picks}) > 1  # and varies across rounds
    assert picks != [sample_clients(names, RoundsConfig(5, 0.3, 2, seed=2), r) for r in range(1, 6)]
    assert len(sample_clients(names, RoundsConfig(1, fraction=0.1, min_clients=4), 1)) == 4
    assert sample_clients(names, RoundsConfig(1, fraction=1.0), 1) == names


def test_run_trains_sampled_clients_and_records_metrics() -> None:
    _seed_all()
    clients = toy_clients(3)
    seen: list[int] = []

    def on_round_end(rnd, weights, record):
        seen.append(rnd)
        return {"val_mse": np.mean([c.evaluate(weights["global"], "val")["mse"] for c in clients])}

    result = run_rounds(federation_of(clients), FedAvg(), initial_weights(), RoundsConfig(rounds=3, fraction=0.5, min_clients=2), on_round_end=on_round_end, progress=False)
    assert seen == [1, 2, 3] and result.resumed_from is None
    assert [len(r.clients) for r in result.history] == [2, 2, 2]
    assert all(set(r.metrics) == {"loss", "val_mse"} and isinstance(r.metrics["val_mse"], float) for r in result.history)
    assert result.history[-1].metrics["val_mse"] < result.history[0].metrics["val_mse"]
    assert set(result.weights) == set(initial_weights())


def test_client_failing_in_round_2_is_left_out_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clients = toy_clients(3)
    clients[1].fail_rounds = {2}
    ledger = Ledger(tmp_path / "ledger.csv")
    with caplog.at_level(logging.WARNING, logger="dsfed.federated.rounds"):
        result = run_rounds(federation_of(clients, ledger=ledger), FedAvg(), initial_weights(), RoundsConfig(rounds=3, min_clients=2), progress=False)
    assert [r.clients for r in result.history] == [["site_a", "site_b", "site_c"], ["site_a", "site_c"], ["site_a", "site_b", "site_c"]]
    assert result.history[1].failed == {"site_b": "OSError: [Errno 28] disk full on site_b"}
    assert any("site_b" in m and "disk full on site_b" in m and "round 2" in m for m in caplog.messages)
    round2 = [(r["client"], r["direction"]) for r in ledger.rows() if r["round"] == 2]
    assert ("site_b", "down") in round2 and ("site_b", "up") not in round2


def test_fewer_than_min_clients_raises_one_line() -> None:
    clients = toy_clients(3)
    clients[1].fail_rounds = {3}
    clients[2].fail_rounds = {3}
    with pytest.raises(FederatedError) as info:
        run_rounds(federation_of(clients), FedAvg(), initial_weights(), RoundsConfig(rounds=4, min_clients=2), progress=False)
    assert str(info.value) == (
        "round 3: only 1 of 3 clients finished (min_clients 2); "
        "site_b failed: OSError: [Errno 28] disk full on site_b; site_c failed: OSError: [Errno 28] disk full on site_c"
    )
    assert isinstance(info.value, DsfedError)
    with pytest.raises(FederatedError, match="min_clients is 4 but there are only 3 clients"):
        run_rounds(federation_of(toy_clients(3)), FedAvg(), initial_weights(), RoundsConfig(rounds=1, min_clients=4), progress=False)


def _run(ckpt: Path, rounds: int = 3, config_hash: str = "h1", clients=None, strategy=None, **kwargs):
    federation = federation_of(clients or toy_clients(3, local_keys=BN_LOCAL), config_hash, state_root=ckpt.parent / f"{ckpt.name}-clients")
    return run_rounds(federation, strategy or build_strategy("fedadam"), initial_weights(), RoundsConfig(rounds=rounds, fraction=0.6, min_clients=2),
                      checkpoints=ckpt, local_keys=BN_LOCAL, progress=False, **kwargs)


def test_checkpoints_keep_last_two_and_a_finished_run_resumes_as_a_no_op(tmp_path: Path) -> None:
    _seed_all()
    first = _run(tmp_path / "ck")
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["latest", "round-0002", "round-0003"]
    assert latest_checkpoint(tmp_path / "ck").round == 3
    again = _run(tmp_path / "ck")
    assert again.resumed_from == 3 and [r.round for r in again.history] == [1, 2, 3]
    assert all(torch.equal(first.weights[k], again.weights[k]) for k in first.weights)


def test_config_hash_mismatch_is_a_clear_error(tmp_path: Path) -> None:
    _run(tmp_path / "ck", rounds=1)
    with pytest.raises(CheckpointError) as info:
        _run(tmp_path / "ck", rounds=2, config_hash="h2")
    message = str(info.value)
    assert str(tmp_path / "ck") in message and "config changed" in message and "delete" in message and "\n" not in message


def test_crash_while_checkpointing_resumes_from_previous_round(tmp_path: Path) -> None:
    _seed_all()
    reference = _run(tmp_path / "ref", rounds=3)

    _seed_all()
    strategy = build_strategy("fedadam")
    calls = {"n": 0}
    original = strategy.state_dict

    def flaky_state_dict():
        calls["n"] += 1
        if calls["n"] == 3:  # the server's checkpoint of round 3, after the clients saved their states of round 3
            raise OSError("no space left on device")
        return original()

    strategy.state_dict = flaky_state_dict
    with pytest.raises(OSError):
        _run(tmp_path / "ck", rounds=3, strategy=strategy)
    assert latest_checkpoint(tmp_path / "ck").round == 2
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["latest", "round-0001", "round-0002"]  # no temp left

    _seed_all()  # a fresh process: its RNGs are restored from the checkpoint anyway
    np.random.rand(5)
    resumed = _run(tmp_path / "ck", rounds=3)
    assert resumed.resumed_from == 2
    assert all(torch.equal(reference.weights[k], resumed.weights[k]) for k in reference.weights)
    assert [r.clients for r in resumed.history] == [r.clients for r in reference.history]


def _stage(tmp: Path, name: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    args = [sys.executable, "-m", "tests.federated.toy", str(tmp / f"{name}-ck"), str(tmp / f"{name}.safetensors"), str(tmp / f"{name}-ledger.csv")]
    return subprocess.Popen(args, cwd=REPO, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_resume_after_sigkill_equals_uninterrupted_run(tmp_path: Path) -> None:
    marker = tmp_path / "paused"
    full = _stage(tmp_path, "full")
    killed = _stage(tmp_path, "killed", {PAUSE_ROUND: "3", PAUSE_MARKER: str(marker)})  # sleeps in round 3, after round 2's checkpoint
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert killed.poll() is None, killed.communicate()[0]
        assert time.monotonic() < deadline, "the stage never reached round 3"
        time.sleep(0.05)
    assert (tmp_path / "killed-ck" / "server" / "latest").read_text().strip() == "round-0002"
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL
    assert any(r.startswith("3,") for r in (tmp_path / "killed-ledger.csv").read_text().splitlines())  # round 3 had started

    resumed = _stage(tmp_path, "killed")
    out_resumed, _ = resumed.communicate(timeout=60)
    out_full, _ = full.communicate(timeout=60)
    assert full.returncode == 0, out_full
    assert resumed.returncode == 0, out_resumed

    a = from_bytes((tmp_path / "full.safetensors").read_bytes())
    b = from_bytes((tmp_path / "killed.safetensors").read_bytes())
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    full_meta = json.loads((tmp_path / "full.json").read_text())
    resumed_meta = json.loads((tmp_path / "killed.json").read_text())
    assert resumed_meta["resumed_from"] == 2 and full_meta["resumed_from"] is None
    assert [r["round"] for r in resumed_meta["history"]] == [1, 2, 3, 4]
    assert resumed_meta["history"] == full_meta["history"]
    # the replayed round 3 is not duplicated in the ledger
    assert (tmp_path / "killed-ledger.csv").read_text() == (tmp_path / "full-ledger.csv").read_text()


def test_non_finite_weights_from_a_client_stop_the_run_naming_client_and_round() -> None:
    """Not a dropped client (the round would go on without a word): a diverged client stops the stage."""
    from dsfed.errors import TrainingDiverged

    clients = toy_clients(3)
    train = clients[2].train

    def diverging(weights, round, config):   # noqa: A002 - the protocol's name
        result = train(weights, round, config)
        if round == 2:
            result.weights["0.weight"].view(-1)[0] = float("nan")
        return result

    clients[2].train = diverging
    with pytest.raises(TrainingDiverged, match=r"^client site_c, round 2: sent non-finite weights \(0\.weight\)"):
        run_rounds(federation_of(clients), FedAvg(), initial_weights(), RoundsConfig(rounds=3, min_clients=1), progress=False)
