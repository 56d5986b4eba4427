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


@pytest.mark.parametrize("resize", ["pad", "stretch"])
@pytest.mark.parametrize("shape", [(20, 13), (45, 70), (32, 32)])   # enlarged (bicubic), shrunk (Lanczos), as is
def test_the_runners_image_rules_are_prepares(resize: str, shape: tuple[int, int], tmp_path: Path) -> None:
    import torch

    from dsfed.data.sources.base import Sample
    from dsfed.data.sources.images import read_image
    from dsfed.data.store import resize_sample
    from dsfed.deploy import predict, runner

    rng = np.random.default_rng(sum(shape))
    files = {"rgba.png": Image.fromarray(rng.integers(0, 255, (*shape, 4), dtype=np.uint8), mode="RGBA"),
             "palette.png": Image.fromarray(rng.integers(0, 255, (*shape, 3), dtype=np.uint8)).convert("P"),
             "wide.png": Image.fromarray(rng.integers(300, 9000, shape).astype(np.uint16)),
             "flat16.png": Image.fromarray(np.full(shape, 700, np.uint16))}
    for name, image in files.items():
        image.save(tmp_path / name)
        decoded = read_image(tmp_path / name)
        assert (runner.read_image(tmp_path / name) == decoded).all(), name
        resized, _ = resize_sample(Sample(image=decoded, mask=np.zeros((0, *shape), bool)), 32, 1, mode=resize)
        ours = runner.model_input(decoded, 32, resize)
        assert (ours == torch.from_numpy(resized).float().div(255).numpy()).all(), name
    logits = torch.randn(2, 16, 16, generator=torch.Generator().manual_seed(0))
    theirs = predict.masks_at_source_size(logits, *shape, resize)
    assert (runner.masks_at_source_size(logits.numpy(), *shape, resize) == theirs).all()
    assert (runner.overlay(read_image(tmp_path / "rgba.png"), theirs) == predict._overlay(read_image(tmp_path / "rgba.png"), theirs)).all()
    big = np.zeros((2, 700, 640), bool)   # outlines 2 px thick past 450 px: the dilation too
    big[0, 100:500, 80:600], big[1, 300:420, 200:330] = True, True
    canvas = rng.integers(0, 255, (700, 640, 3), dtype=np.uint8)
    assert (runner.overlay(canvas, big) == predict._overlay(canvas, big)).all()
