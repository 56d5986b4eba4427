"""``dsfed predict``: images in, masks and overlays out, at each image's own resolution.

An image is decoded as ``prepare`` decodes a client's (:func:`dsfed.data.sources.images.read_image`: grey,
palette, RGBA and 16-bit images become 8-bit RGB) and resized as ``prepare`` resizes it
(:func:`dsfed.data.store.resize_sample`, ``data.resize`` stretch or pad), so the model sees what it saw in
training. Its logits (C, Sm, Sm) are then mapped back: bilinearly upsampled to the padded square and
cropped (pad), or straight to (H, W) (stretch), and thresholded at 0. A file that cannot be read gets one
line and the run goes on; the summary counts what was segmented.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from dsfed.data.sources.base import Sample
from dsfed.data.sources.images import is_image_file, list_images, read_image
from dsfed.data.store import resize_sample
from dsfed.errors import DsfedError, SourceError
from dsfed.generation.grid import OUTLINE_COLOURS
from dsfed.io import atomic_path
from dsfed.models.segmenter import Segmenter

if TYPE_CHECKING:
    from dsfed.deploy.export import OnnxSegmenter

__all__ = ["MaskFormat", "PredictSummary", "collect_inputs", "masks_at_source_size", "predict_images"]

log = logging.getLogger(__name__)
MaskFormat = Literal["per-class", "label"]


@dataclass
class PredictSummary:
    """What a prediction run did: images segmented, and one reason per image skipped."""

    segmented: list[Path] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    def line(self, out: Path) -> str:
        total = len(self.segmented) + len(self.skipped)
        tail = f"; {len(self.skipped)} skipped (see the lines above)" if self.skipped else ""
        return f"segmented {len(self.segmented)} of {total} image(s) into {out}{tail}"


def collect_inputs(inputs: Iterable[Path]) -> list[Path]:
    """Every image to segment: a folder's image files (sorted, not recursive), or a file as given."""
    files: list[Path] = []
    for path in inputs:
        if path.is_dir():
            files += list_images(path)
        elif path.exists():
            files.append(path)
        else:
            raise DsfedError(f"{path}: no such file or folder")
    if not files:
        raise DsfedError(f"no images in {', '.join(map(str, inputs))} (accepted: .png, .jpg, .jpeg, .bmp, .tif, .tiff)")
    return files


def masks_at_source_size(logits: torch.Tensor, height: int, width: int, resize: str) -> np.ndarray:
    """Logits (C, Sm, Sm) -> boolean masks (C, H, W): ``prepare``'s resize undone (pad: upsample to the padded
    square, then crop its centre; stretch: upsample to (H, W))."""
    if resize == "pad":
        side = max(height, width)
        up = F.interpolate(logits[None].float(), size=(side, side), mode="bilinear", align_corners=False)[0]
        top, left = (side - height) // 2, (side - width) // 2
        up = up[:, top : top + height, left : left + width]
    else:
        up = F.interpolate(logits[None].float(), size=(height, width), mode="bilinear", align_corners=False)[0]
    return (up > 0).numpy()


def _overlay(image: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 with each of the first three classes outlined in its colour, about 1/300 of the side thick."""
    from scipy.ndimage import binary_dilation, binary_erosion

    out = image.copy()
    width = max(1, round(max(image.shape[:2]) / 300))
    for k, channel in enumerate(masks[: len(OUTLINE_COLOURS)]):
        edge = channel & ~binary_erosion(channel)
        if width > 1:
            edge = binary_dilation(edge, iterations=width - 1)
        out[edge] = OUTLINE_COLOURS[k][1]
    return out


def _save_png(array: np.ndarray, path: Path) -> None:
    with atomic_path(path, overwrite=True) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def _write(out: Path, stem: str, image: np.ndarray, masks: np.ndarray, classes: list[str], fmt: MaskFormat) -> None:
    """``<stem>_<class>.png`` (0/255) per class, or ``<stem>_label.png`` (0 background, k+1 class k, later
    classes on top), and ``<stem>_overlay.png``."""
    if fmt == "label":
        label = np.zeros(masks.shape[1:], np.uint8)
        for k, channel in enumerate(masks):
            label[channel] = k + 1
        _save_png(label, out / f"{stem}_label.png")
    else:
        for k, name in enumerate(classes):
            _save_png(masks[k].astype(np.uint8) * 255, out / f"{stem}_{name}.png")
    _save_png(_overlay(image, masks), out / f"{stem}_overlay.png")


def _decoded(files: list[Path], summary: PredictSummary) -> Iterator[tuple[Path, np.ndarray]]:
    for path in files:
        try:
            if not is_image_file(path):
                raise SourceError(f"{path}: not an image file (accepted: .png, .jpg, .jpeg, .bmp, .tif, .tiff)")
            yield path, read_image(path)
        except SourceError as exc:
            summary.skipped[str(path)] = str(exc)
            log.warning("%s", exc)


def predict_images(model: Segmenter | OnnxSegmenter, files: list[Path], out: Path, classes: list[str], image_size: int, resize: str,
                   batch_size: int = 8, fmt: MaskFormat = "per-class", device: torch.device | None = None,
                   progress: bool = True) -> PredictSummary:
    """Segment ``files`` with ``model`` into ``out``; unreadable files are skipped with one line each.

    Args:
        model: a prompt-free segmenter in eval mode (a box-prompted one needs boxes no image carries), or an
            ONNX export run by onnxruntime.
        classes: the class names (one mask channel each). image_size / resize: ``data.image_size`` and
            ``data.resize`` of the task the model was trained on.
    """
    from tqdm.auto import tqdm

    if model.prompt == "box":
        raise DsfedError("this model takes box prompts (one box per class from a mask), which new images do not have: "
                         "predict runs prompt-free models")
    if device is None:
        device = next(model.parameters()).device if isinstance(model, Segmenter) else torch.device("cpu")
    out.mkdir(parents=True, exist_ok=True)
    summary = PredictSummary()
    stems = {p: p.stem for p in files}
    if len(set(stems.values())) < len(files):   # same name in two folders: keep both
        stems = {p: f"{p.parent.name}_{p.stem}" for p in files}
    batch: list[tuple[Path, np.ndarray, np.ndarray]] = []
    bar = tqdm(total=len(files), desc="predict", unit="img", disable=not progress)

    def flush() -> None:
        x = torch.from_numpy(np.stack([resized for _, _, resized in batch])).float().div(255).to(device)
        with torch.no_grad():
            logits = model(x).cpu()
        for (path, image, _), lg in zip(batch, logits, strict=True):
            masks = masks_at_source_size(lg, image.shape[0], image.shape[1], resize)
            _write(out, stems[path], image, masks, classes, fmt)
            summary.segmented.append(path)
        bar.update(len(batch))
        batch.clear()

    for path, image in _decoded(files, summary):
        empty = np.zeros((0, *image.shape[:2]), bool)
        resized, _ = resize_sample(Sample(image=image, mask=empty), image_size, 1, mode=resize)
        batch.append((path, image, resized))
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    bar.update(len(summary.skipped))
    bar.close()
    return summary
