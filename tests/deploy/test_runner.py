"""The export's own ``predict.py`` (:mod:`dsfed.deploy.runner`), run where neither PyTorch nor dsfed can be
imported, gives the masks ``dsfed predict`` gives from the same export."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.deploy.conftest import dsfed_run

BLOCKED = ("torch", "dsfed", "scipy")


def hospital_python(tmp: Path) -> dict[str, str]:
    """An environment whose first import path holds packages named torch, dsfed and scipy that refuse to import."""
    blocker = tmp / "blocked"
    for name in BLOCKED:
        (blocker / name).mkdir(parents=True)
        (blocker / name / "__init__.py").write_text(f"raise ImportError('{name} is not installed at the hospital')\n")
    return {**os.environ, "PYTHONPATH": str(blocker)}


@pytest.fixture(scope="module")
def exported(project: Path) -> Path:
    done = dsfed_run(project, "export", "model", "-o", "export-runner", "--check-images", "2")
    assert done.returncode == 0, done.stderr
    assert "python predict.py" in done.stdout
    return project / "export-runner"


def test_the_export_ships_a_runner_and_its_requirements(exported: Path) -> None:
    spec = json.loads((exported / "export.json").read_text())
    assert spec["runner"]["script"] == "predict.py" and (exported / "predict.py").is_file()
    requirements = (exported / "requirements.txt").read_text().split()
    assert [r.split(">=")[0] for r in requirements] == ["onnxruntime", "numpy", "pillow"]
    tree = ast.parse((exported / "predict.py").read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert imported - set(sys.stdlib_module_names) == {"numpy", "PIL", "onnxruntime"}


def test_the_runner_without_torch_gives_dsfed_predicts_masks(project: Path, exported: Path, tmp_path: Path) -> None:
    hospital = tmp_path / "hospital"
    shutil.copytree(exported, hospital / "model")   # what the hospital receives, far from the repository
    env = hospital_python(tmp_path)
    blocked = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True, cwd=hospital)
    assert blocked.returncode != 0 and "not installed at the hospital" in blocked.stderr
    code = "import PIL.Image, runpy, sys; PIL.Image.MAX_IMAGE_PIXELS = 1_000_000; sys.argv = sys.argv[1:]; " \
           "runpy.run_path(sys.argv[0], run_name='__main__')"
    run = subprocess.run([sys.executable, "-c", code, "model/predict.py", str(project / "images"), "-o", "masks"],
                         env=env, capture_output=True, text=True, cwd=hospital)
    assert run.returncode == 0, run.stderr
    assert "segmented 3 of 5 image(s)" in run.stdout and "2 skipped" in run.stdout   # notes.txt is not listed
    for bad in ("corrupt.png", "huge.png"):
        lines = [line for line in run.stderr.splitlines() if bad in line]
        assert len(lines) == 1 and lines[0].startswith("skipped: "), (bad, run.stderr)

    reference = dsfed_run(project, "predict", "export-runner", "images", "-o", "export-runner-masks")
    assert reference.returncode == 0, reference.stderr
    spec = json.loads((exported / "export.json").read_text())
    for stem in ("colour", "grey", "wide16"):
        for name in [*(f"{stem}_{c}.png" for c in spec["classes"]), f"{stem}_overlay.png"]:
            a = np.asarray(Image.open(hospital / "masks" / name))
            b = np.asarray(Image.open(project / "export-runner-masks" / name))
            assert a.shape == b.shape and (a == b).all(), name

    label = subprocess.run([sys.executable, "model/predict.py", str(project / "images" / "grey.png"), "-o", "labels",
                            "--format", "label"], env=env, capture_output=True, text=True, cwd=hospital)
    assert label.returncode == 0, label.stderr
    values = np.unique(np.asarray(Image.open(hospital / "labels/grey_label.png")))
    assert set(values.tolist()) <= {0, 1, 2}
