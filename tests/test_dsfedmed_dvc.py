"""The whole DSFedMed pipeline under a real `dvc repro` on a temporary git+DVC copy, at tiny size.

Every stage runs once and in order, a second repro is a no-op, and ``dvc exp run -S distill.lam=0.3``
reruns exactly distill, evaluate and report.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from dsfed.config import parse_params
from dsfed.models import build_model
from tests.conftest import dvc_project, phantom_client, run_ok, stages_run
from tests.generation.test_stages import tiny_release

pytestmark = pytest.mark.slow

DOWNSTREAM = ["server_sam", "distill", "evaluate", "report"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, prefect_api: str) -> tuple[Path, dict[str, str], str]:
    root = tmp_path_factory.mktemp("dsfedmed")
    tiny_release(root)
    torch.manual_seed(0)
    foundation = build_model("sam_demo", num_classes=2, output_size=16, input_size=64)
    save_file({k: v.contiguous() for k, v in foundation.state_dict().items()}, str(root / "release/sam.safetensors"))
    clients = {"a": phantom_client("site_a", n=12, view="roi"), "b": phantom_client("site_b", n=12, view="roi"),
               "h": phantom_client("site_d", n=6, view="roi")}
    for client in clients.values():
        client["source"]["path"] = "data/phantom/sites.yaml"
    raw = {
        "seed": 0,
        "data": {"image_size": 32, "mask_size": 16, "holdout": "h"},
        "prepare": {"split": {"val": 0.2, "test": 0.2}},
        "federated": {"rounds": 1, "augment": {"enabled": False},
                      "methods": {"fedtinysam": {"model": "tinysam_demo", "input_size": 64}}},
        "backbone": {"path": "release/backbone", "controlnet": "release/controlnet.safetensors"},
        "controlnet": {"steps": 2, "batch_size": 4, "warmup_steps": 0},
        "synthesize": {"n": 10, "batch_size": 8, "sampler": {"steps": 2, "guidance_scale": 1.0}},
        "quality": {"segmenter": {"epochs": 1, "input_size": 32}, "feature_size": 64, "grid_n": 2},
        "server_sam": {"checkpoint": "release/sam.safetensors", "input_size": 64, "epochs": 1, "augment": {"enabled": False}},
        "distill": {"rounds": 1, "rate": 0.5},
        "evaluate": {"bootstrap": 100, "timing_images": 2, "overlays": 1},
        "clients": clients,
    }
    env = dvc_project(root, parse_params(raw, root=root).model_dump(mode="json"), api_url=prefect_api)
    first = run_ok([sys.executable, "-m", "dvc", "repro"], root, env)
    return root, env, first


def test_every_stage_runs_once_in_order(repo: tuple[Path, dict[str, str], str]) -> None:
    root, env, first = repo
    ran = stages_run(first)
    assert ran[-4:] == DOWNSTREAM
    assert len(ran) == len(set(ran)) == 3 + 1 + 1 + 3 * 3 + 4  # prepare x3, federated, backbone, 3 per client, downstream
    assert ran.index("federated@fedtinysam") < ran.index("distill") and ran.index("quality@b") < ran.index("evaluate")
    second = run_ok([sys.executable, "-m", "dvc", "repro"], root, env)
    assert stages_run(second) == [] and "Data and pipelines are up to date" in second
    report = root / "artifacts/report/index.html"
    assert report.stat().st_size > 10_000 and "DSFedMed" in report.read_text()
    metrics = json.loads((root / "artifacts/eval/metrics.json").read_text())
    assert metrics["order"] == ["fedtinysam", "foundation", "server_sam", "dsfedmed_tiny", "dsfedmed_sam"]
    timings = [json.loads(line)["stage"] for line in (root / "artifacts/timings.jsonl").read_text().splitlines()]
    assert set(ran) <= set(timings)  # every stage recorded its wall time


def test_changing_lam_reruns_only_distill_evaluate_report(repo: tuple[Path, dict[str, str], str]) -> None:
    root, env, _ = repo
    subprocess.run(["git", "add", "-A"], cwd=root, env=env, check=True, capture_output=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "lock"], cwd=root, env=env,
                   check=True, capture_output=True)
    out = run_ok([sys.executable, "-m", "dvc", "exp", "run", "-S", "distill.lam=0.3"], root, env)
    assert stages_run(out) == ["distill", "evaluate", "report"]
    assert json.loads((root / "artifacts/distill/metrics.json").read_text())["settings"]["lam"] == 0.3
