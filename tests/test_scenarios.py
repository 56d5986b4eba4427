"""The embedded scenarios: the skin-lesion one stays the fundus demo with only the task swapped, and validates."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import REPO


def _skin_params() -> str:
    spec = importlib.util.spec_from_file_location("skin_scenario", REPO / "scripts/skin_scenario.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.skin_params((REPO / "params.yaml").read_text()))


def test_the_skin_scenario_is_the_demo_with_the_task_swapped() -> None:
    committed = (REPO / "scenarios/skin/params.yaml").read_text()
    assert committed == _skin_params(), "params.yaml changed: rerun `python scripts/skin_scenario.py`"
    fundus, skin = yaml.safe_load((REPO / "params.yaml").read_text()), yaml.safe_load(committed)
    assert skin["data"]["classes"] == ["lesion"] and skin["data"]["holdout"] == "derm_d"
    for section in ("federated", "backbone", "controlnet", "synthesize", "server_sam", "distill", "evaluate"):
        a, b = dict(fundus[section]), dict(skin[section])
        a.pop("clients", None), b.pop("clients", None), a.pop("prompt", None), b.pop("prompt", None)
        assert a == b, section


def test_the_skin_scenario_validates_from_a_checkout(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text((REPO / "scenarios/skin/params.yaml").read_text())
    (tmp_path / "data").symlink_to(REPO / "data")
    result = subprocess.run([sys.executable, "-m", "dsfed", "config", "validate", str(tmp_path / "params.yaml")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "OK (4 clients: derm_a, derm_b, derm_c, derm_d, held out: derm_d)" in result.stdout
