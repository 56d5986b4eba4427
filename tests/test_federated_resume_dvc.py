"""A federated stage killed mid-run resumes on the next `dvc repro` and ends as an uninterrupted run does."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dsfed.config import Params, parse_params
from tests.conftest import dvc_project, phantom_client, run_ok

pytestmark = pytest.mark.slow
ROUNDS = 6


def _repo(root: Path, api_url: str) -> tuple[dict[str, str], Params]:
    clients = {name: phantom_client(site, n=24, view="roi") for name, site in (("a", "site_a"), ("b", "site_b"))}
    for client in clients.values():
        client["source"]["path"] = "data/phantom/sites.yaml"
    params = parse_params(
        {
            "seed": 0,
            "data": {"image_size": 48, "mask_size": 24},
            "prepare": {"split": {"val": 0.2, "test": 0.2}},
            "federated": {"rounds": ROUNDS, "min_clients": 2, "local": {"batch_size": 4, "lr": 1e-3},
                          "methods": {"m": {"model": "unet", "input_size": 48}}},
            "clients": clients,
        },
        root=root,
    )
    return dvc_project(root, params.model_dump(mode="json"), api_url=api_url), params  # every default written out, as DVC needs


def _repro(root: Path, env: dict[str, str]) -> str:
    result = subprocess.run([sys.executable, "-m", "dvc", "repro", "federated"], cwd=root, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def _completed_round(root: Path) -> int:
    for latest in (root / "artifacts/federated/m/checkpoints").glob("*/latest"):
        return int(latest.read_text().strip().split("-")[1])
    return 0


def test_killed_stage_resumes_on_next_repro(tmp_path: Path, prefect_api: str) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    env, _ = _repo(root, prefect_api)
    proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "federated"], cwd=root, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while _completed_round(root) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole `dvc repro` process group, mid-stage
    proc.wait()
    done = _completed_round(root)
    assert 2 <= done < ROUNDS, f"kill landed after round {done}"
    assert not (root / "artifacts/federated/m/metrics.json").exists()

    out = _repro(root, env)
    assert "Running stage 'federated@m'" in out and "Running stage 'prepare" not in out
    assert f"round {done} of {ROUNDS} completed" in out  # the log line of a resumed run

    # the uninterrupted reference: the same stores, one straight run in a fresh process like the stage's
    # (bit-equality holds for the same torch thread count: float reductions depend on it)
    reference = tmp_path / "reference"
    shutil.copytree(root / "artifacts/clients", reference / "clients")
    script = (
        "from pathlib import Path; from dsfed.config import load_params; "
        "from dsfed.stages.federated_run import run_method; from dsfed.stages.federated_outputs import write_method_outputs; "
        f"run = run_method(load_params('params.yaml'), 'm', Path({str(reference)!r}), Path({str(reference)!r}) / 'federated/m', progress=False); "
        "assert run.resumed_from is None; "
        f"write_method_outputs(run, Path({str(reference)!r}) / 'federated/m')"
    )
    subprocess.run([sys.executable, "-c", script], cwd=root, env=env, check=True, capture_output=True)
    straight = load_file(str(reference / "federated/m/model.safetensors"))
    metrics = json.loads((reference / "federated/m/metrics.json").read_text())
    resumed = load_file(str(root / "artifacts/federated/m/model.safetensors"))
    assert resumed.keys() == straight.keys() and all(torch.equal(resumed[k], v) for k, v in straight.items())
    after = json.loads((root / "artifacts/federated/m/metrics.json").read_text())
    assert after.pop("resumed_from") == done and metrics.pop("resumed_from") is None   # the record says it resumed
    assert after == metrics
    ledger = (reference / "federated/m/ledger.csv").read_text()
    assert ledger == (root / "artifacts/federated/m/ledger.csv").read_text()  # replayed rounds not logged twice

    # a checkpoint replaced in place (anything in federated.pretrained_dir) makes the federated stage stale
    assert "up to date" in run_ok([sys.executable, "-m", "dvc", "status", "federated"], root, env)
    weights = root / "data/pretrained/embedded/sam_demo.safetensors"
    weights.write_bytes(weights.read_bytes() + b"\0")
    assert "federated@m" in run_ok([sys.executable, "-m", "dvc", "status", "federated"], root, env)
