"""A small deployment project: params.yaml, a U-Net model folder, a folder of good and bad images."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from dsfed.models import build_model
from dsfed.server.outputs import save_model
from tests.conftest import ModuleTmp, phantom_client


@pytest.fixture(scope="module")
def project(module_tmp: ModuleTmp) -> Path:
    """params.yaml (fundus classes, 32 px images, padded), a U-Net folder, and an input folder with a colour
    image, a grey one, a 16-bit one, a corrupt file, a text file and an image past PIL's pixel limit."""
    root = module_tmp("predict")
    params = {"data": {"image_size": 32, "mask_size": 16, "resize": "pad"}, "clients": {"a": phantom_client("site_a")}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    torch.manual_seed(0)
    model = build_model("unet", num_classes=2, output_size=16, input_size=32)
    save_model(root / "model", model, "unet", 32)
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (30, 50, 3), dtype=np.uint8)).save(images / "colour.png")
    Image.fromarray(rng.integers(0, 255, (64, 48), dtype=np.uint8), mode="L").save(images / "grey.png")
    Image.fromarray(rng.integers(0, 4096, (40, 40)).astype(np.uint16)).save(images / "wide16.png")
    (images / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (images / "notes.txt").write_text("not an image")
    Image.fromarray(np.zeros((1200, 2100, 3), np.uint8)).save(images / "huge.png")
    return root


def dsfed_run(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``dsfed ARGS`` in a real process in ``root``, with PIL's pixel limit at 1 M pixels (huge.png is 2.5 M:
    over twice the limit, so PIL refuses it)."""
    code = ("import PIL.Image; PIL.Image.MAX_IMAGE_PIXELS = 1_000_000; "
            "import sys; from dsfed.cli import main; sys.argv = ['dsfed', *sys.argv[1:]]; main()")
    return subprocess.run([sys.executable, "-c", code, *args], cwd=root, capture_output=True, text=True)
