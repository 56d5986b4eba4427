"""``dsfed export --format onnx``: a real export, checked against PyTorch, and ``dsfed predict`` run from it alone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from tests.deploy.conftest import dsfed_run


def test_an_onnx_export_matches_pytorch_and_predict_runs_from_it_without_params(project: Path) -> None:
    done = dsfed_run(project, "export", "model", "-o", "export", "--check-images", "6")
    assert done.returncode == 0, done.stderr
    spec = json.loads((project / "export/export.json").read_text())
    assert spec["classes"] == ["optic_disc", "optic_cup"] and (spec["image_size"], spec["mask_size"], spec["resize"]) == (32, 16, "pad")
    parity = spec["parity"]
    assert parity["images"] == 6 and parity["images_from"] == "random"   # no client store in this project
    assert parity["max_abs_logit_difference"] < 1e-4 and parity["mask_dice_pytorch_vs_export"] > 0.999
    assert spec["timing_ms_per_image"]["pytorch"] > 0 and spec["timing_ms_per_image"]["onnxruntime"] > 0
    assert "max |logit difference|" in done.stdout and "onnxruntime" in done.stdout
    assert (project / "export/model_card.json").is_file() and (project / "export/MODEL_CARD.md").is_file()

    (project / "elsewhere").mkdir()   # a hospital's folder: the export and the images, no params.yaml
    onnx = dsfed_run(project / "elsewhere", "predict", "../export", "../images", "-o", "masks")
    assert onnx.returncode == 0, onnx.stderr
    assert "ONNX" in onnx.stdout and "segmented 3 of 5 image(s)" in onnx.stdout
    torch_run = dsfed_run(project, "predict", "model", "images", "-o", "torch-masks")
    assert torch_run.returncode == 0, torch_run.stderr
    for stem in ("colour", "grey", "wide16"):
        for cls in spec["classes"]:
            a = np.asarray(Image.open(project / "elsewhere/masks" / f"{stem}_{cls}.png"))
            b = np.asarray(Image.open(project / "torch-masks" / f"{stem}_{cls}.png"))
            assert a.shape == b.shape and (a == b).mean() > 0.999, (stem, cls)


def test_an_unknown_format_is_one_line(project: Path) -> None:
    bad = dsfed_run(project, "export", "model", "--format", "torchscript", "-o", "nope")
    assert bad.returncode == 2 and bad.stderr.strip() == "error: --format 'torchscript': choose onnx or bundle" and not (project / "nope").exists()


def test_an_export_never_writes_into_a_folder_of_other_files(project: Path) -> None:
    before = sorted(p.name for p in (project / "images").iterdir())
    bad = dsfed_run(project, "export", "model", "-o", "images")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "is not an earlier export" in bad.stderr
    assert sorted(p.name for p in (project / "images").iterdir()) == before
