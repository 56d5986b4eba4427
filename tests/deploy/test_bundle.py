"""``dsfed export --format bundle``: a MONAI bundle that ``python -m monai.bundle run`` executes as is, giving
``dsfed predict``'s masks, with TorchScript weights that match PyTorch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tests.deploy.conftest import dsfed_run


def test_a_bundle_runs_under_monai_and_gives_predicts_masks(project: Path) -> None:
    done = dsfed_run(project, "export", "model", "--format", "bundle", "-o", "bundle", "--check-images", "4")
    assert done.returncode == 0, done.stderr
    bundle = project / "bundle"
    spec = json.loads((bundle / "export.json").read_text())
    assert spec["format"] == "bundle" and spec["parity"]["max_abs_logit_difference"] < 1e-4
    assert "monai.bundle run" in done.stdout and "TorchScript" in done.stdout
    meta = json.loads((bundle / "configs/metadata.json").read_text())
    assert meta["network_data_format"]["outputs"]["pred"]["channel_def"] == {"0": "optic_disc", "1": "optic_cup"}
    assert meta["network_data_format"]["inputs"]["image"]["spatial_shape"] == [32, 32]
    assert (bundle / "docs/README.md").read_text().startswith("#")
    traced = torch.jit.load(str(bundle / "models/model.ts"))
    assert tuple(traced(torch.rand(3, 3, 32, 32)).shape) == (3, 2, 16, 16)   # traced at batch 2, any batch runs

    run = subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json",
                          "--meta_file", "configs/metadata.json", "--dataset_dir", str(project / "images"),
                          "--output_dir", str(project / "bundle-masks")], cwd=bundle, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "segmented 4 of 5 image(s)" in run.stdout + run.stderr   # the corrupt file refused, huge.png within PIL's own limit
    reference = dsfed_run(project, "predict", "model", "images", "-o", "bundle-reference")
    assert reference.returncode == 0, reference.stderr
    for stem in ("colour", "grey", "wide16"):
        for cls in spec["classes"]:
            a = np.asarray(Image.open(project / "bundle-masks" / f"{stem}_{cls}.png"))
            b = np.asarray(Image.open(project / "bundle-reference" / f"{stem}_{cls}.png"))
            assert a.shape == b.shape and (a == b).mean() > 0.999, (stem, cls)
