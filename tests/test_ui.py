"""``dsfed_pipeline/flows/ui.py``: the deployments `make ui` serves, built from params.yaml (the served run is tested
end to end in tests/test_dsfedmed_dvc.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

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
    assert pipeline.parameters == {"root": str(root.resolve())} and not pipeline.triggers and not pipeline.schedules
    (trigger,) = redistill.triggers
    assert trigger.expect == {CLIENT_JOINED} and trigger.for_each == {"prefect.resource.id"}
    assert trigger.parameters == {"client": "{{ event.payload.client }}", "root": str(root.resolve())}
    (schedule,) = redistill.schedules
    assert schedule.schedule.cron == "30 3 * * 1" and schedule.schedule.timezone == "Europe/Paris"


def test_no_cron_and_no_trigger_when_switched_off(tmp_path: Path) -> None:
    _, redistill = build_deployments(_project(tmp_path, cron=None, on_join=False))
    assert not redistill.triggers and not redistill.schedules
