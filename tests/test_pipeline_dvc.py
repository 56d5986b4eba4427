"""`dvc repro` on a temporary git+DVC copy of the project: builds stores, no-op rerun, per-client reruns."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from dsfed.config import parse_params
from dsfed.data.store import ClientStore
from tests.conftest import ModuleTmp, dvc_project, phantom_client, run_ok, stages_run

pytestmark = pytest.mark.slow


def _lock(repo: Path) -> dict[str, object]:
    return yaml.safe_load((repo / "dvc.lock").read_text())["stages"]


@pytest.fixture(scope="module")
def repo(module_tmp: ModuleTmp, prefect_api: str) -> tuple[Path, dict[str, str]]:
    root = module_tmp("pipeline")
    params = {
        "seed": 0,
        "data": {"image_size": 32, "mask_size": 16, "holdout": "site_b"},
        "prepare": {"split": {"val": 0.2, "test": 0.2}},
        "federated": {"methods": {}},  # this test covers prepare; no federated stage instances
        "clients": {name: phantom_client(site, n=6) for name, site in (("site_a", "site_a"), ("site_b", "site_b"))},
    }
    for client in params["clients"].values():
        client["source"]["path"] = "data/phantom/sites.yaml"
    # every default written out (DVC needs each key its stages list); only the prepare stages run here
    return root, dvc_project(root, parse_params(params, root=root).model_dump(mode="json"), api_url=prefect_api)


@pytest.fixture(scope="module")
def built(repo: tuple[Path, dict[str, str]]) -> tuple[Path, dict[str, str], str]:
    """The repo after its first ``dvc repro prepare`` (and that run's output): every test starts from a built
    repo, so each passes alone as well as after the others."""
    root, env = repo
    return root, env, run_ok([sys.executable, "-m", "dvc", "repro", "prepare"], root, env)


def test_repro_builds_every_store_then_is_a_noop(built: tuple[Path, dict[str, str], str]) -> None:
    root, env, first = built
    assert sorted(stages_run(first)) == ["prepare@site_a", "prepare@site_b"]
    a = ClientStore(root / "artifacts/clients/site_a/data.zarr")
    b = ClientStore(root / "artifacts/clients/site_b/data.zarr")
    assert a.images.shape == (6, 3, 32, 32) and not a.is_holdout and b.is_holdout
    lock = _lock(root)
    second = run_ok([sys.executable, "-m", "dvc", "repro", "prepare"], root, env)
    assert stages_run(second) == [] and "Data and pipelines are up to date" in second
    assert _lock(root) == lock
    status = run_ok([sys.executable, "-m", "dvc", "status", "prepare"], root, env)
    assert "up to date" in status


def test_new_client_runs_only_its_own_stage(built: tuple[Path, dict[str, str], str]) -> None:
    root, env, _ = built
    before = _lock(root)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["clients"]["site_e"] = phantom_client("site_c", n=5)
    params["clients"]["site_e"]["source"]["path"] = "data/phantom/sites.yaml"
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = run_ok([sys.executable, "-m", "dvc", "repro", "prepare"], root, env)
    assert stages_run(out) == ["prepare@site_e"]
    after = _lock(root)
    assert {k: after[k] for k in before} == before
    assert len(ClientStore(root / "artifacts/clients/site_e/data.zarr")) == 5


def test_changing_one_client_reruns_only_that_client(built: tuple[Path, dict[str, str], str]) -> None:
    root, env, _ = built
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["clients"]["site_a"]["source"]["n"] = 7
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = run_ok([sys.executable, "-m", "dvc", "repro", "prepare"], root, env)
    assert stages_run(out) == ["prepare@site_a"]
    assert len(ClientStore(root / "artifacts/clients/site_a/data.zarr")) == 7


def test_pipeline_flow_runs_what_dvc_finds_out_of_date(built: tuple[Path, dict[str, str], str]) -> None:
    """``dsfed_pipeline/flows/pipeline.py``: one task per out-of-date stage, each stage's own flow run on the same server."""
    import asyncio

    root, env, _ = built
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["clients"]["site_b"]["source"]["n"] = 7
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = run_ok([sys.executable, "-m", "dsfed_pipeline.flows.pipeline", "prepare"], root, env)
    assert "1 stage(s) out of date or downstream of one: prepare@site_b" in out
    assert len(ClientStore(root / "artifacts/clients/site_b/data.zarr")) == 7
    assert "up to date" in run_ok([sys.executable, "-m", "dvc", "status", "prepare"], root, env)
    again = run_ok([sys.executable, "-m", "dsfed_pipeline.flows.pipeline", "prepare"], root, env)
    assert "0 stage(s) out of date" in again

    async def runs() -> dict[str, int]:
        from prefect import get_client
        from prefect.client.schemas.filters import FlowFilter, FlowFilterName

        async with get_client() as client:
            found = {}
            for name in ("pipeline", "prepare"):
                flow_runs = await client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[name])))
                found[name] = sum(r.state is not None and r.state.is_completed() for r in flow_runs)
            return found

    import os

    previous = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = env["PREFECT_API_URL"]
    try:
        from prefect.settings import temporary_settings

        from tests.conftest import prefect_settings

        with temporary_settings(prefect_settings(env["PREFECT_API_URL"])):
            found = asyncio.run(runs())
    finally:
        if previous is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = previous
    assert found["pipeline"] >= 2 and found["prepare"] >= 1


def test_plan_orders_changed_stages_and_what_follows() -> None:
    """The plan behind ``dsfed_pipeline/flows/pipeline.py``, from ``dvc dag --dot`` text: a new client's stages and the
    server side, in dependency order; targets limit it to their upstream."""
    from dsfed.orchestration.plan import order_stages, parse_dag

    dot = """strict digraph {
"prepare@a";
"prepare@c";
"federation";
"federated@tiny";
"controlnet@c";
"synthesize@c";
"server_sam";
"distill";
"prepare@a" -> "federation";
"prepare@c" -> "federation";
"federation" -> "federated@tiny";
"prepare@c" -> "controlnet@c";
"controlnet@c" -> "synthesize@c";
"synthesize@c" -> "server_sam";
"server_sam" -> "distill";
"federated@tiny" -> "distill";
}"""
    nodes, edges = parse_dag(dot)
    assert nodes[:2] == ["prepare@a", "prepare@c"] and ("server_sam", "distill") in edges and len(edges) == 8
    full = order_stages(nodes, edges, {"prepare@c"}, [])
    assert full == ["prepare@c", "federation", "federated@tiny", "controlnet@c", "synthesize@c", "server_sam", "distill"]
    assert order_stages(nodes, edges, {"prepare@c"}, ["prepare"]) == ["prepare@c"]
    assert order_stages(nodes, edges, {"prepare@c"}, ["synthesize"]) == ["prepare@c", "controlnet@c", "synthesize@c"]
    assert order_stages(nodes, edges, set(), []) == []
