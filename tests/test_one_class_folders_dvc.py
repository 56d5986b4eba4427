"""A new user's one-class task, the README's way: folders of PNG images and masks with equal file names.

The committed ``params.yaml`` (the embedded default, with its shipped backbone, generic ControlNet, foundation
SAM and TinySAM student) is edited with the README's own step-2 YAML (read from README.md: ``data``,
``federated.clients``, ``clients``), with the data folder moved to the test's and sizes made tiny for the
test's run time. No hand-made file besides the user's own images: every stage runs under a real ``dvc repro``,
and the report names the task's class.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from dsfed.data.phantom import load_site_style, render_skin, sample_rng
from tests.conftest import REPO, ModuleTmp, dvc_project, run_ok, stages_run

pytestmark = [pytest.mark.slow, pytest.mark.extended]   # make test-all: the whole pipeline under DVC is test_dsfedmed_dvc's kind (5 min)


def write_lesion_folders(base: Path, clinic: str, n: int, size: int = 72) -> None:
    """``base/images/case_NNN.png`` (RGB) and ``base/masks/case_NNN.png`` (0 / 255): the user's own data."""
    style = load_site_style(REPO / "data/phantom/sites.yaml", "skin", clinic)
    (base / "images").mkdir(parents=True)
    (base / "masks").mkdir()
    for i in range(n):
        image, masks, _ = render_skin(sample_rng(7, clinic, i), size, style)
        Image.fromarray(image).save(base / "images" / f"case_{i:03d}.png")
        Image.fromarray((masks["lesion"] * 255).astype(np.uint8)).save(base / "masks" / f"case_{i:03d}.png")


def readme_step_2() -> dict[str, Any]:
    """The YAML block of the README's "2. Edit `params.yaml`" step."""
    text = (REPO / "README.md").read_text().split("**2. Edit `params.yaml`**", 1)[1]
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    return yaml.safe_load(block)  # type: ignore[no-any-return]


def user_params(root: Path) -> dict[str, Any]:
    """The committed params.yaml with the README's edits for a one-class folder task (and tiny sizes)."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    step = yaml.safe_load(yaml.safe_dump(readme_step_2()).replace("/data/lesions", str(root / "hospitals")))
    raw["data"].update(step["data"])
    raw["federated"]["clients"] = step["federated"]["clients"]
    raw["clients"] = step["clients"]
    raw["backbone"].update(step["backbone"])
    raw["samfed"] = step.get("samfed", raw["samfed"])
    assert raw["data"]["classes"] == ["lesion"] and raw["data"]["holdout"] == "hospital_c"
    raw["data"].update({"image_size": 32, "mask_size": 16})  # tiny, for the test's run time
    raw["prepare"]["split"].update({"val": 0.2, "test": 0.2})
    raw["federated"]["rounds"] = 1
    raw["federated"]["augment"]["enabled"] = False
    for method in raw["federated"]["methods"].values():
        method.pop("rounds", None)
        if method["model"].startswith("sam") or method["model"].startswith("tinysam"):
            method["input_size"] = 64
    raw["controlnet"].update({"steps": 2, "batch_size": 4, "warmup_steps": 0})
    raw["synthesize"].update({"n": 8, "batch_size": 8})
    raw["synthesize"]["sampler"]["steps"] = 2
    raw["quality"].update({"feature_size": 64, "grid_n": 2})
    raw["quality"]["segmenter"].update({"epochs": 1, "input_size": 32})
    raw["server_sam"].update({"input_size": 64, "epochs": 1})
    raw["distill"].update({"rounds": 1})
    raw["evaluate"].update({"bootstrap": 100, "timing_images": 2, "overlays": 1})
    return raw


@pytest.fixture(scope="module")
def repo(module_tmp: ModuleTmp, prefect_api: str) -> tuple[Path, dict[str, str], str]:
    root = module_tmp("one_class")
    for name, clinic, n in (("hospital_a", "clinic_a", 14), ("hospital_b", "clinic_b", 14), ("hospital_c", "clinic_c", 6)):
        write_lesion_folders(root / "hospitals" / name, clinic, n)
    env = dvc_project(root, user_params(root), api_url=prefect_api)
    # a fresh clone holds every embedded component the committed params.yaml names
    shutil.copytree(REPO / "data/pretrained/embedded", root / "data/pretrained/embedded", dirs_exist_ok=True)
    validated = run_ok([sys.executable, "-m", "dsfed", "config", "validate", "params.yaml"], root, env)
    first = run_ok([sys.executable, "-m", "dvc", "repro"], root, env)
    return root, env, validated + first


def test_the_whole_pipeline_runs_on_a_one_class_folder_task(repo: tuple[Path, dict[str, str], str]) -> None:
    root, env, output = repo
    ran = stages_run(output)
    assert ran[-4:] == ["server_sam", "distill", "evaluate", "report"]
    assert {"prepare@hospital_a", "controlnet@hospital_b", "federated@fedsam", "federated@fedmsa", "federated@fedunet_lite0"} <= set(ran)
    # a one-class task is one the shipped ControlNet learnt (skin, polyp), and the README's prompt is one the
    # backbone learnt: validation has nothing to note
    assert "note:" not in output
    metrics = json.loads((root / "artifacts/eval/metrics.json").read_text())
    assert metrics["classes"] == ["lesion"]
    # the shipped foundation knows `lesion` (multi-task public corpus): its channel loads by name, so it has a row
    assert "re-initialised" not in output and "foundation" in metrics["order"]
    for model in ("fedtinysam", "fedunet", "fedmsa", "dsfedmed_tiny"):
        assert "hospital_c" in metrics["models"][model]["clients"]
    report = (root / "artifacts/report/index.html").read_text()
    assert "lesion outlined" in report and "optic_cup" not in report
    assert stages_run(run_ok([sys.executable, "-m", "dvc", "repro"], root, env)) == []
    status = subprocess.run([sys.executable, "-m", "dvc", "status"], cwd=root, env=env, capture_output=True, text=True)
    assert status.returncode == 0 and "up to date" in status.stdout
