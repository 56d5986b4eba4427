"""``dsfed_pipeline/flows/ui.py``: the deployments `make ui` serves, built from params.yaml, and the server they are
served from, closed to other local processes (the served run is tested end to end in tests/test_dsfedmed_dvc.py)."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from dsfed_pipeline.flows.events import CLIENT_JOINED
from dsfed_pipeline.flows.ui import build_deployments
from tests.conftest import REPO


def _project(tmp_path: Path, **redistill: object) -> Path:
    shutil.copytree(REPO / "data/phantom", tmp_path / "data/phantom")
    (tmp_path / "data/pretrained").symlink_to(REPO / "data/pretrained")
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["redistill"].update(redistill)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return tmp_path


def test_redistill_has_the_join_trigger_and_the_params_cron(tmp_path: Path) -> None:
    root = _project(tmp_path, cron="30 3 * * 1", timezone="Europe/Paris")
    pipeline, redistill = build_deployments(root)
    assert (pipeline.name, redistill.name) == ("pipeline", "redistill")
    assert not pipeline.parameters and not pipeline.triggers and not pipeline.schedules   # no folder among them
    (trigger,) = redistill.triggers
    assert trigger.expect == {CLIENT_JOINED} and trigger.for_each == {"prefect.resource.id"}
    assert trigger.parameters == {"client": "{{ event.payload.client }}"}
    (schedule,) = redistill.schedules
    assert schedule.schedule.cron == "30 3 * * 1" and schedule.schedule.timezone == "Europe/Paris"


def test_no_cron_and_no_trigger_when_switched_off(tmp_path: Path) -> None:
    _, redistill = build_deployments(_project(tmp_path, cron=None, on_join=False))
    assert not redistill.triggers and not redistill.schedules


@pytest.fixture(scope="module")
def closed_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A server as `make ui` starts it (its own PREFECT_HOME), with the two deployments applied to it."""
    import os

    from dsfed.orchestration.prefect_server import auth_string, ours, start_server, stop_server

    home = tmp_path_factory.mktemp("ui-home")
    root = _project(tmp_path_factory.mktemp("ui-project"))
    proc, url = start_server(home=home, log=home / "server.log")
    try:
        assert ours(url, home) and not ours(url, tmp_path_factory.mktemp("other-home"))
        from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: url, PREFECT_API_AUTH_STRING: auth_string(home)}):
            previous = os.getcwd()
            os.chdir(root)
            try:
                ids = {d.name: str(d.apply()) for d in build_deployments(".")}
            finally:
                os.chdir(previous)
        yield url, auth_string(home), ids
    finally:
        stop_server(proc)


def _session(url: str, auth: str | None) -> tuple[httpx.Client, dict[str, str]]:
    headers = {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()} if auth else {}
    client = httpx.Client(base_url=url, headers=headers, timeout=30)
    token = client.get("/csrf-token", params={"client": "test-client"})
    csrf = {"Prefect-Csrf-Token": token.json()["token"], "Prefect-Csrf-Client": "test-client"} if token.status_code == 200 else {}
    return client, csrf


def test_a_request_without_the_auth_string_is_refused(closed_server: Any) -> None:
    url, auth, ids = closed_server
    stranger, _ = _session(url, None)
    assert stranger.get("/health").status_code == 200                      # the health probe alone stays open
    assert stranger.get("/admin/version").status_code == 401
    assert stranger.get(f"/deployments/{ids['pipeline']}").status_code == 401
    assert stranger.post(f"/deployments/{ids['pipeline']}/create_flow_run", json={"parameters": {}}).status_code in (401, 403)
    wrong, _ = _session(url, "dsfed:guess")
    assert wrong.get("/admin/version").status_code == 401
    owner, _ = _session(url, auth)
    assert owner.get("/admin/version").status_code == 200


def test_csrf_and_cors_are_on(closed_server: Any) -> None:
    url, auth, ids = closed_server
    client, csrf = _session(url, auth)
    assert csrf, "the server hands out CSRF tokens"
    assert client.post(f"/deployments/{ids['pipeline']}/create_flow_run", json={"parameters": {}}).status_code == 403   # no token
    port = url.split(":")[-1].split("/")[0]
    preflight = {"Access-Control-Request-Method": "POST"}
    evil = client.options("/flows/filter", headers={"Origin": "http://evil.example", **preflight})
    assert evil.headers.get("access-control-allow-origin") in (None, "")
    own = client.options("/flows/filter", headers={"Origin": f"http://127.0.0.1:{port}", **preflight})
    assert own.headers.get("access-control-allow-origin") == f"http://127.0.0.1:{port}"


def test_a_flow_run_with_a_foreign_root_is_refused(closed_server: Any) -> None:
    """The exploit: one POST ran `dvc repro` in a folder of the caller's choice. The deployments take no folder,
    and their closed schema refuses the parameter outright."""
    url, auth, ids = closed_server
    client, csrf = _session(url, auth)
    for name in ("pipeline", "redistill"):
        refused = client.post(f"/deployments/{ids[name]}/create_flow_run", headers=csrf, json={"parameters": {"root": "/tmp/elsewhere"}})
        assert refused.status_code in (409, 422), (name, refused.status_code, refused.text)
    accepted = client.post(f"/deployments/{ids['pipeline']}/create_flow_run", headers=csrf, json={"parameters": {"targets": ["report"]}})
    assert accepted.status_code == 201, accepted.text
