"""The whole DSFedMed pipeline under a real `dvc repro` on a temporary git+DVC copy, at tiny size.

Every stage runs once and in order, a second repro is a no-op; a client added with ``dsfed clients add``
starts the served ``redistill`` deployment through its event trigger, which reruns exactly the new
client's stages and the server side (distill warm-started); and ``dvc exp run -S distill.lam=0.3`` reruns
exactly distill, evaluate and report. A second copy in another folder gives byte-identical output hashes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import save_file

from dsfed.config import parse_params
from dsfed.models import build_model
from dsfed.orchestration.prefect_server import stop_server
from tests.conftest import ModuleTmp, dvc_project, phantom_client, run_ok, stages_run
from tests.generation.test_stages import tiny_release

pytestmark = pytest.mark.slow

DOWNSTREAM = ["server_sam", "distill", "evaluate", "report"]


def _project(root: Path, prefect_api: str) -> tuple[dict[str, str], str]:
    """The tiny DSFedMed project in ``root`` (a release, a foundation SAM, three phantom clients), after its
    first ``dvc repro``: (environment, the repro's output)."""
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
        "federated": {"rounds": 1, "augment": {"enabled": False}, "clients": ["a", "b", "h"],
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
    env = dvc_project(root, parse_params(raw, root=root).model_dump(mode="json"), api_url=prefect_api, portable=True)
    return env, run_ok([sys.executable, "-m", "dvc", "repro"], root, env)


def _output_hashes(root: Path) -> dict[tuple[str, str], str]:
    """(stage, output path) -> the output's hash in ``root/dvc.lock``."""
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    return {(stage, out["path"]): out["md5"] for stage, entry in lock.items() for out in entry.get("outs", [])}


FIRST_LOCK: dict[str, dict[tuple[str, str], str]] = {}   # the first repro's output hashes, before later tests change the repo


@pytest.fixture(scope="module")
def repo(module_tmp: ModuleTmp, prefect_api: str) -> tuple[Path, dict[str, str], str]:
    root = module_tmp("dsfedmed")
    env, first = _project(root, prefect_api)
    FIRST_LOCK["outs"] = _output_hashes(root)
    return root, env, first


def test_every_stage_runs_once_in_order(repo: tuple[Path, dict[str, str], str]) -> None:
    root, env, first = repo
    ran = stages_run(first)
    assert ran[-4:] == DOWNSTREAM
    assert len(ran) == len(set(ran)) == 3 + 2 + 1 + 3 * 3 + 4  # prepare x3, federation + federated, backbone, 3 per client, downstream
    assert ran.index("federated@fedtinysam") < ran.index("distill") and ran.index("quality@b") < ran.index("evaluate")
    second = run_ok([sys.executable, "-m", "dvc", "repro"], root, env)
    assert stages_run(second) == [] and "Data and pipelines are up to date" in second
    report = root / "artifacts/report/index.html"
    assert report.stat().st_size > 10_000 and "DSFedMed" in report.read_text()
    metrics = json.loads((root / "artifacts/eval/metrics.json").read_text())
    assert metrics["order"] == ["fedtinysam", "foundation", "server_sam", "dsfedmed_tiny", "dsfedmed_tiny_unguarded", "dsfedmed_sam"]
    timings = [json.loads(line)["stage"] for line in (root / "artifacts/timings.jsonl").read_text().splitlines()]
    assert set(ran) <= set(timings)  # every stage recorded its wall time


JOINED = ["prepare@c", "federation", "controlnet@c", "synthesize@c", "quality@c", *DOWNSTREAM]


def _flow_runs(api: str, name: str) -> list[Any]:
    import asyncio

    from prefect import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.settings import temporary_settings

    from tests.conftest import prefect_settings

    async def read() -> list[Any]:
        async with get_client() as client:
            return await client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[name])))

    with temporary_settings(prefect_settings(api)):
        return asyncio.run(read())


def test_a_joining_client_triggers_redistill_of_only_its_stages(repo: tuple[Path, dict[str, str], str]) -> None:
    """`dsfed clients add` emits dsfed.client.joined; the served `redistill` deployment's event trigger starts
    a run, which completes, having rerun exactly the new client's stages and the server side."""
    root, env, _ = repo
    lock = lambda: yaml.safe_load((root / "dvc.lock").read_text())["stages"]  # noqa: E731
    before = lock()
    log = root.parent / "ui.log"  # a file, not a pipe: a full pipe would block the runner
    served = subprocess.Popen([sys.executable, "-m", "dsfed_pipeline.flows.ui", "--port", env["PREFECT_API_URL"].split(":")[-1].split("/")[0],
                               "--root", "."], cwd=root, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while "redistill" not in _deployments(env["PREFECT_API_URL"]):
            assert served.poll() is None and time.monotonic() < deadline, log.read_text(errors='replace')[-3000:]
            time.sleep(1)
        added = run_ok([sys.executable, "-m", "dsfed", "clients", "add", "c", "--like", "b", "--set", "site=site_c",
                        "--set", "n=8", "--params", "params.yaml"], root, env)
        assert "sent dsfed.client.joined for c" in added and "outside the pinned federation" in added
        deadline = time.monotonic() + 600
        while True:
            runs = [r for r in _flow_runs(env["PREFECT_API_URL"], "redistill") if r.parameters.get("client") == "c"]
            if runs and runs[0].state is not None and runs[0].state.is_final():
                break
            assert served.poll() is None and time.monotonic() < deadline, log.read_text(errors='replace')[-3000:]
            time.sleep(3)
    finally:
        stop_server(served)  # SIGTERM to its process group, SIGKILL after 30 s
    run = runs[0]
    assert run.state.is_completed(), (run.state, log.read_text(errors='replace')[-3000:])
    assert run.deployment_id is not None and "root" not in run.parameters   # the served project, never a parameter
    after = lock()
    changed = [name for name in after if before.get(name) != after[name]]
    assert sorted(changed) == sorted(JOINED)  # every other stage's lock entry is untouched: no federated rerun
    assert "up to date" in run_ok([sys.executable, "-m", "dvc", "status"], root, env)
    distill = json.loads((root / "artifacts/distill/metrics.json").read_text())
    assert distill["warm_start_from"], "distill must warm-start from the previous distilled models"
    metrics = json.loads((root / "artifacts/eval/metrics.json").read_text())
    assert "c" in metrics["models"]["dsfedmed_tiny"]["clients"] and "c" in metrics["source_clients"]
    assert "c joined outside the federation" in (root / "artifacts/report/index.html").read_text()
    pipelines = [r for r in _flow_runs(env["PREFECT_API_URL"], "pipeline") if r.parent_task_run_id is not None]
    assert pipelines, "the redistill run drives the pipeline flow as a subflow"


def _deployments(api: str) -> list[str]:
    """Names of the deployments on the (closed: auth string and CSRF token) server at ``api``."""
    import asyncio

    from prefect import get_client
    from prefect.settings import temporary_settings

    from tests.conftest import prefect_settings

    async def read() -> list[str]:
        async with get_client() as client:
            return [d.name for d in await client.read_deployments()]

    with temporary_settings(prefect_settings(api)):
        return asyncio.run(read())


def test_changing_lam_reruns_only_distill_evaluate_report(repo: tuple[Path, dict[str, str], str]) -> None:
    root, env, _ = repo
    subprocess.run(["git", "add", "-A"], cwd=root, env=env, check=True, capture_output=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "lock"], cwd=root, env=env,
                   check=True, capture_output=True)
    out = run_ok([sys.executable, "-m", "dvc", "exp", "run", "-S", "distill.lam=0.3"], root, env)
    assert stages_run(out) == ["distill", "evaluate", "report"]
    assert json.loads((root / "artifacts/distill/metrics.json").read_text())["settings"]["lam"] == 0.3


@pytest.mark.extended   # make test-all: byte-identical copies are test_samfed_dvc's kind too (3.5 min here, 2 min there)
def test_a_second_copy_elsewhere_gives_byte_identical_output_hashes(repo: tuple[Path, dict[str, str], str],
                                                                    tmp_path: Path,
                                                                    prefect_api: str) -> None:
    """Issue 16: the same inputs give the same bytes in another folder (a fresh clone on another machine), so a
    checkout's ``dvc repro`` reruns nothing whose inputs did not change: no wall times, timestamps, run-dependent
    metadata or absolute paths in any output."""
    other = tmp_path / "dsfedmed-again"
    _project(other, prefect_api)
    again = _output_hashes(other)
    assert set(again) == set(FIRST_LOCK["outs"])
    differing = sorted(f"{stage}: {path}" for key in again if again[key] != FIRST_LOCK["outs"][key] for stage, path in [key])
    assert not differing, f"{len(differing)} of {len(again)} output hashes differ:\n" + "\n".join(differing)
