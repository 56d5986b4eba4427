"""A SAM-Fed variant end to end on a tiny task: masks unreadable in training, the teacher sent once, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dsfed.data.dataset import StoreDataset
from dsfed.data.store import ClientStore
from dsfed.errors import UnlabelledError
from dsfed.federated.ledger import read_ledger
from dsfed.federated.serialize import from_bytes
from dsfed.samfed.client import SamFedClient, SamFedTraining
from dsfed.samfed.run import run_variant
from dsfed.samfed.server import build_architecture
from tests.conftest import ModuleTmp
from tests.samfed.tiny import PAUSE_MARKER, PAUSE_ROUND, REPO, build_task


@pytest.fixture(scope="module")
def task(module_tmp: ModuleTmp) -> Path:
    root = module_tmp("samfed")
    build_task(root)
    return root


def test_a_clients_training_cannot_read_its_masks(task: Path, tmp_path: Path) -> None:
    params = build_task(task)
    store = task / "artifacts/samfed/clients/c1/data.zarr"
    arch = params.samfed.architectures["unet"]
    client = SamFedClient("c1", store, None, lambda: build_architecture(params.samfed, arch, 0, torch.device("cpu")), None,
                          SamFedTraining(pseudo="self", global_kd=True, public_pass=False), tmp_path / "cache")
    assert "mask" not in client.train_set[0]
    with pytest.raises(UnlabelledError, match="testing only"):
        client.store.masks[int(client.store.split("train")[0])]
    with pytest.raises(UnlabelledError):
        StoreDataset(client.store, "train")[0]
    weights = {k: v.clone() for k, v in client.model.state_dict().items()}
    result = client.train(weights, 1, {})   # trains on its images alone
    assert result.num_samples == len(client.store.split("train")) + len(client.store.split("val")) and result.metrics["loss"] > 0
    assert client.evaluate(result.weights, "test")["dice"] >= 0   # its test masks are readable
    # only the upper bound opens the store as an oracle
    assert ClientStore(store, oracle=True).masks[int(client.store.split("train")[0])].shape == (1, 16, 16)


def test_variant_sends_the_teacher_once_and_only_weights_otherwise(task: Path) -> None:
    params = build_task(task)
    out = task / "artifacts/samfed/variants/samfed"
    metrics = run_variant(params, "samfed", task / "artifacts", out, progress=False)
    rows = read_ledger(out / "ledger.csv")
    teacher = [r for r in rows if r["what"] == "teacher"]
    adapter = (task / "artifacts/samfed/teacher/adapter.safetensors").stat().st_size
    assert sorted(r["client"] for r in teacher) == ["c1", "c2"]
    assert all(int(r["round"]) == 0 and r["direction"] == "down" and int(r["bytes"]) == adapter for r in teacher)
    assert {r["what"] for r in rows} == {"teacher", "teacher_receipt", "global_weights", "update", "test_weights", "test_metrics"}
    assert set(metrics["test"]) == {"c1", "c2"} and [p["round"] for p in metrics["curve"]] == [0, 1, 2, 3]
    assert all(0 <= p["pl_test_kept"] <= 1 and 0 <= p["pl_test_accuracy"] <= 1 for p in metrics["curve"][1:])
    # a second run finds the finished checkpoint and the cached teacher: nothing is sent again
    again = run_variant(params, "samfed", task / "artifacts", out, progress=False)
    assert again["resumed_from"] == 3
    assert [r for r in read_ledger(out / "ledger.csv") if r["what"] == "teacher"] == teacher
    receipts = [r for r in rows if r["what"] == "teacher_receipt"]
    assert sorted(r["client"] for r in receipts) == ["c1", "c2"] and all(r["direction"] == "up" for r in receipts)


def _child(task: Path, out: Path, variant: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tests.samfed.tiny", str(task), variant, str(out)], cwd=REPO,
                            env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["samfed", pytest.param("hetero", marks=pytest.mark.extended)])   # hetero: make test-all
def test_resume_after_sigkill_is_bit_identical(task: Path, tmp_path: Path, variant: str) -> None:
    build_task(task)
    marker = tmp_path / "paused"
    full = _child(task, tmp_path / "full", variant)
    out, _ = full.communicate(timeout=300)
    assert full.returncode == 0, out
    killed = _child(task, tmp_path / "killed", variant, {PAUSE_ROUND: "3", PAUSE_MARKER: str(marker)})
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert killed.poll() is None, killed.communicate()[0]
        assert time.monotonic() < deadline, "the run never reached round 3"
        time.sleep(0.1)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    resumed = _child(task, tmp_path / "killed", variant)
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    a = from_bytes((tmp_path / "full/model.safetensors").read_bytes())
    b = from_bytes((tmp_path / "killed/model.safetensors").read_bytes())
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    full_m, resumed_m = (json.loads((tmp_path / f"{n}/metrics.json").read_text()) for n in ("full", "killed"))
    assert resumed_m["resumed_from"] == 2 and resumed_m["curve"] == full_m["curve"] and resumed_m["test"] == full_m["test"]
    assert (tmp_path / "killed/ledger.csv").read_text() == (tmp_path / "full/ledger.csv").read_text()


@pytest.mark.slow
def test_rcrf_moves_only_public_set_logits_and_never_averages_architectures(task: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dsfed.federated.engines.inprocess import InProcessEngine

    params = build_task(task)
    seen: list[tuple[str, dict[str, tuple[int, ...]]]] = []
    original = InProcessEngine.fit

    def spy(self: InProcessEngine, tasks: dict) -> dict:   # every payload that crosses, both ways
        replies = original(self, tasks)
        for name, fit in tasks.items():
            seen.append(("down", {k: tuple(v.shape) for k, v in from_bytes(fit.payload).items()}))
            seen.append(("up", {k: tuple(v.shape) for k, v in from_bytes(replies[name].payload).items()}))
        return replies

    monkeypatch.setattr(InProcessEngine, "fit", spy)
    out = task / "artifacts/samfed/variants/hetero"
    metrics = run_variant(params, "hetero", task / "artifacts", out, progress=False)
    public = ClientStore(task / "artifacts/samfed/public/data.zarr")
    n_public = len(public.split("train")) + len(public.split("val"))
    assert len(seen) == 2 * 2 * 3   # 2 clients x 3 rounds, down and up
    assert all(shapes == {"logits": (n_public, 1, 16, 16)} for _, shapes in seen)   # no weights, any architecture
    rows = read_ledger(out / "ledger.csv")
    inits = {r["client"]: int(r["bytes"]) for r in rows if r["what"] == "init"}
    sizes = {a: (task / f"artifacts/samfed/init/{a}/model.safetensors").stat().st_size for a in ("unet", "nnunet")}
    assert inits == {"c1": sizes["unet"], "c2": sizes["nnunet"]} and sizes["unet"] != sizes["nnunet"]   # each its own, once
    assert set(metrics["test"]) == {"c1", "c2"} and all("dice_ci_low" in m for m in metrics["test"].values())
    assert metrics["architectures"] == {"c1": "unet", "c2": "nnunet"}
    assert all(0 <= r <= 3 for r in metrics["selected_round"].values())
