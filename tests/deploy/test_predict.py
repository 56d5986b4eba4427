"""``dsfed predict``: a real CLI process on a folder of good and bad images, and the resize undone exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dsfed.deploy.predict import masks_at_source_size
from tests.deploy.conftest import dsfed_run


def test_predict_segments_every_readable_image_at_its_own_size_and_names_each_bad_one(project: Path) -> None:
    done = dsfed_run(project, "predict", "model", "images", "-o", "out", "--batch-size", "2")
    assert done.returncode == 0, done.stderr
    assert "segmented 3 of 5 image(s) into out; 2 skipped" in done.stdout   # notes.txt is not listed: not an image name
    assert "corrupt.png: cannot read image" in done.stderr and "huge.png: cannot read image" in done.stderr
    sizes = {"colour": (50, 30), "grey": (48, 64), "wide16": (40, 40)}
    for stem, size in sizes.items():
        for suffix in ("optic_disc", "optic_cup", "overlay"):
            with Image.open(project / "out" / f"{stem}_{suffix}.png") as im:
                assert im.size == size, (stem, suffix)
    with Image.open(project / "out/colour_optic_disc.png") as im:
        assert set(np.unique(np.asarray(im))) <= {0, 255}
    assert not (project / "out/corrupt_optic_disc.png").exists() and not (project / "out/huge_overlay.png").exists()


def test_label_format_and_bad_arguments_get_one_line(project: Path) -> None:
    done = dsfed_run(project, "predict", "model", "images/colour.png", "-o", "labels", "--format", "label")
    assert done.returncode == 0, done.stderr
    with Image.open(project / "labels/colour_label.png") as im:
        assert im.size == (50, 30) and set(np.unique(np.asarray(im))) <= {0, 1, 2}
    for args, message in ((["nowhere", "images"], "model 'nowhere': no such model name or path"),
                          (["model", "missing"], "missing: no such file or folder"),
                          (["model", "images", "--format", "rle"], "--format 'rle': choose per-class or label")):
        bad = dsfed_run(project, "predict", *args, "-o", "bad")
        lines = bad.stderr.strip().splitlines()
        assert bad.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"error: {message}"), bad.stderr
        assert not (project / "bad").exists()


def test_the_resize_is_undone_where_the_image_was() -> None:
    """A square of positive logits at the mask size lands on the same region of a padded, non-square image."""
    logits = torch.full((1, 16, 16), -5.0)
    logits[0, 4:12, 4:12] = 5.0   # the centre half of the square
    pad = masks_at_source_size(logits, 30, 60, "pad")[0]   # padded to 60 x 60: rows 15..45 hold the image
    assert pad.shape == (30, 60)
    rows, cols = np.nonzero(pad)
    assert (cols.min(), cols.max()) == (15, 44) and (rows.min(), rows.max()) == (0, 29)   # the square's rows 15..44 cover all 30
    stretch = masks_at_source_size(logits, 30, 60, "stretch")[0]
    rows, cols = np.nonzero(stretch)
    # 16 -> 30 rows, 16 -> 60 columns: the centre half is rows 7.5..22.5 and columns 15..45 (a pixel on a half
    # boundary is a tie of the interpolation, either side)
    assert rows.min() in (7, 8) and rows.max() in (21, 22) and (cols.min(), cols.max()) == (15, 44)
