"""`dvc repro` of the generation stages on a temporary git+DVC copy (tiny backbone): what runs, what crosses.

Also the privacy rule: the server-side ``synthesize`` flow gives the same synthetic set when the client's
image and mask arrays are gone from its store.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from dsfed.config import parse_params
from dsfed.data.store import ClientStore
from dsfed.federated.ledger import read_ledger
from tests.conftest import ModuleTmp, dvc_project, phantom_client, run_ok, stages_run
from tests.generation.test_stages import tiny_release

pytestmark = pytest.mark.slow

CLIENT_STAGES = ("prepare", "controlnet", "synthesize", "quality")


@pytest.fixture(scope="module")
def repo(module_tmp: ModuleTmp, prefect_api: str) -> tuple[Path, dict[str, str], str]:
    root = module_tmp("generation")
    tiny_release(root)
    # one training client (the held-out client's no-op stages are covered in tests/generation/test_stages.py)
    clients = {"a": phantom_client("site_a", n=12, view="roi")}
    for client in clients.values():
        client["source"]["path"] = "data/phantom/sites.yaml"
    raw = {
        "seed": 0,
        "data": {"image_size": 32, "mask_size": 16},
        "prepare": {"split": {"val": 0.2, "test": 0.2}},
        "federated": {"methods": {}},
        "backbone": {"path": "release/backbone", "controlnet": "release/controlnet.safetensors"},
        "controlnet": {"steps": 3, "batch_size": 4, "warmup_steps": 0},
        "synthesize": {"n": 10, "batch_size": 8, "sampler": {"steps": 2}},
        "quality": {"segmenter": {"epochs": 1, "input_size": 32}, "feature_size": 64, "grid_n": 2},
        "clients": clients,
    }
    env = dvc_project(root, parse_params(raw, root=root).model_dump(mode="json"), api_url=prefect_api)
    first = run_ok([sys.executable, "-m", "dvc", "repro", "quality"], root, env)
    return root, env, first


def test_repro_runs_the_chain_once(repo: tuple[Path, dict[str, str], str]) -> None:
    root, env, first = repo
    expected = {"backbone"} | {f"{stage}@a" for stage in CLIENT_STAGES}
    assert sorted(stages_run(first)) == sorted(expected)
    order = stages_run(first)
    assert order.index("backbone") < order.index("controlnet@a") < order.index("synthesize@a") < order.index("quality@a")
    second = run_ok([sys.executable, "-m", "dvc", "repro", "quality"], root, env)
    assert stages_run(second) == [] and "Data and pipelines are up to date" in second
    assert (root / "artifacts/quality/a/grid.png").stat().st_size > 0
    metrics = run_ok([sys.executable, "-m", "dvc", "metrics", "show"], root, env)
    assert "artifacts/quality/a/quality.json" in metrics


def test_only_controlnet_weights_and_masks_cross_to_the_server(repo: tuple[Path, dict[str, str], str]) -> None:
    root, _, _ = repo
    rows = read_ledger(root / "artifacts/generators/a/ledger.csv")
    assert {(r["direction"], r["what"]) for r in rows} == {("up", "controlnet"), ("up", "masks")}
    uploaded = {p.name for p in (root / "artifacts/generators/a").iterdir()}
    assert uploaded == {"controlnet.safetensors", "masks.zarr", "ledger.csv", "generator.json", "dvclive"}


def test_server_stage_runs_without_the_clients_image_arrays(repo: tuple[Path, dict[str, str], str]) -> None:
    root, env, _ = repo
    before = ClientStore(root / "artifacts/synthetic/a/data.zarr").images[:]
    store = root / "artifacts/clients/a/data.zarr"
    for array in ("images", "masks"):
        shutil.rmtree(store / array)
    shutil.rmtree(root / "artifacts/synthetic/a/data.zarr")
    run_ok([sys.executable, "-m", "dsfed_pipeline.flows.synthesize", "a"], root, env)
    after = ClientStore(root / "artifacts/synthetic/a/data.zarr").images[:]
    assert np.array_equal(before, after)
    assert not (store / "images").exists()  # nothing recreated the client's arrays
