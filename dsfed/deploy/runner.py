"""The hospital's side of an export: segment images with ``model.onnx`` using onnxruntime, numpy and Pillow alone.

``dsfed export`` copies this file into the export folder as ``predict.py`` beside ``requirements.txt``, so a
hospital runs its model without PyTorch (about 130 MB of packages instead of PyTorch's 1.2 GB, or 4.4 GB with
its CUDA libraries) and without dsfed::

    pip install -r requirements.txt
    python predict.py IMAGES... -o OUT [--format per-class|label] [--batch-size 8]

It reads ``export.json`` beside it (classes, image size, resize mode). What it does to an image is what
``dsfed predict`` does (and ``prepare`` before training): decoded as ``dsfed.data.sources.images.read_image``
decodes (grey, palette, RGBA and 16-bit images become 8-bit RGB), resized as ``dsfed.data.store.resize_sample``
resizes (centred zero padding to a square first for ``pad``; Lanczos when shrinking, bicubic when enlarging),
the logits upsampled bilinearly to the padded square and cropped (pad) or straight to (H, W) (stretch), and
thresholded at 0. This file imports nothing from dsfed, so those rules are written here a second time;
``tests/deploy/test_runner.py`` holds the two to the same masks, pixel for pixel.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
OUTLINE_COLOURS = ((0, 255, 0), (0, 128, 255), (255, 0, 255))   # channels 0, 1, 2: green, blue, magenta


class UnreadableImage(Exception):
    """An input that is not an image this runner can decode (one line, naming the file)."""


def read_image(path: Path) -> np.ndarray:
    """Decode ``path`` as (H, W, 3) uint8 RGB (16-bit or float grey kept if in 0..255, else stretched min..max)."""
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        raise UnreadableImage(f"{path}: not an image file (accepted: {', '.join(IMAGE_EXTENSIONS)})")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in WIDE_MODES:
                grey = np.asarray(im).astype(np.float64)
                lo, hi = float(grey.min()), float(grey.max())
                if lo >= 0 and hi <= 255:
                    grey8 = np.rint(grey).astype(np.uint8)
                elif hi <= lo:
                    grey8 = np.zeros(grey.shape, np.uint8)
                else:
                    grey8 = np.rint((grey - lo) * (255.0 / (hi - lo))).astype(np.uint8)
                return np.repeat(grey8[:, :, None], 3, axis=2)
            return np.array(im if im.mode == "RGB" else im.convert("RGB"), dtype=np.uint8)
    except Exception as exc:  # PIL raises OSError, ValueError, SyntaxError, DecompressionBombError...
        reason = "not a recognised image format" if isinstance(exc, Image.UnidentifiedImageError) else \
            (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UnreadableImage(f"{path}: cannot read image ({reason})") from exc


def model_input(image: np.ndarray, size: int, resize: str) -> np.ndarray:
    """(H, W, 3) uint8 -> (3, size, size) float32 in [0, 1], resized as ``prepare`` resizes."""
    if resize == "pad":
        h, w = image.shape[:2]
        side = max(h, w)
        top, left = (side - h) // 2, (side - w) // 2
        image = np.pad(image, [(top, side - h - top), (left, side - w - left), (0, 0)])
    rgb = Image.fromarray(np.ascontiguousarray(image))
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.LANCZOS if rgb.width > size else Image.Resampling.BICUBIC)
    return np.asarray(rgb).transpose(2, 0, 1).astype(np.float32) / np.float32(255)


def _bilinear_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of a half-pixel-centred bilinear resize (PyTorch's ``align_corners=False``)."""
    src = np.maximum((np.arange(n_out, dtype=np.float32) + np.float32(0.5)) * np.float32(n_in / n_out) - np.float32(0.5), 0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (src - i0).astype(np.float32)


def upsample(logits: np.ndarray, height: int, width: int) -> np.ndarray:
    """(C, h, w) -> (C, height, width), bilinear with half-pixel centres."""
    r0, r1, rw = _bilinear_weights(logits.shape[1], height)
    c0, c1, cw = _bilinear_weights(logits.shape[2], width)
    rows = logits[:, r0] * (1 - rw)[None, :, None] + logits[:, r1] * rw[None, :, None]
    return rows[:, :, c0] * (1 - cw)[None, None, :] + rows[:, :, c1] * cw[None, None, :]


def masks_at_source_size(logits: np.ndarray, height: int, width: int, resize: str) -> np.ndarray:
    """(C, Sm, Sm) logits -> (C, H, W) bool: the resize undone, thresholded at 0."""
    if resize == "pad":
        side = max(height, width)
        top, left = (side - height) // 2, (side - width) // 2
        return upsample(logits, side, side)[:, top : top + height, left : left + width] > 0
    return upsample(logits, height, width) > 0


def _cross_erode(mask: np.ndarray) -> np.ndarray:
    p = np.pad(mask, 1)
    return mask & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]


def _cross_dilate(mask: np.ndarray) -> np.ndarray:
    p = np.pad(mask, 1)
    return mask | p[:-2, 1:-1] | p[2:, 1:-1] | p[1:-1, :-2] | p[1:-1, 2:]


def overlay(image: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 with the first three classes outlined, about 1/300 of the side thick."""
    out = image.copy()
    width = max(1, round(max(image.shape[:2]) / 300))
    for k, channel in enumerate(masks[: len(OUTLINE_COLOURS)]):
        edge = channel & ~_cross_erode(channel)
        for _ in range(width - 1):
            edge = _cross_dilate(edge)
        out[edge] = OUTLINE_COLOURS[k]
    return out


def _save(array: np.ndarray, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(array).save(tmp, format="PNG")
    tmp.replace(path)


def write_outputs(out: Path, stem: str, image: np.ndarray, masks: np.ndarray, classes: list[str], fmt: str) -> None:
    """``<stem>_<class>.png`` (0/255) per class or ``<stem>_label.png`` (k+1 for class k), and ``<stem>_overlay.png``."""
    if fmt == "label":
        label = np.zeros(masks.shape[1:], np.uint8)
        for k, channel in enumerate(masks):
            label[channel] = k + 1
        _save(label, out / f"{stem}_label.png")
    else:
        for k, name in enumerate(classes):
            _save(masks[k].astype(np.uint8) * 255, out / f"{stem}_{name}.png")
    _save(overlay(image, masks), out / f"{stem}_overlay.png")


def image_files(inputs: list[Path]) -> list[Path]:
    """A folder's image files (sorted, not recursive, hidden ones skipped), or a file as given."""
    files: list[Path] = []
    for path in inputs:
        if path.is_dir():
            files += sorted((p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
                             and p.suffix.lower() in IMAGE_EXTENSIONS), key=lambda p: p.name)
        elif path.exists():
            files.append(path)
        else:
            raise SystemExit(f"error: {path}: no such file or folder")
    if not files:
        raise SystemExit(f"error: no images in {', '.join(map(str, inputs))} (accepted: {', '.join(IMAGE_EXTENSIONS)})")
    return files


def batches(files: list[Path], size: int, skipped: dict[str, str]) -> Iterator[list[tuple[Path, np.ndarray]]]:
    """Decoded images in groups of ``size``; one stderr line per file that cannot be read."""
    batch: list[tuple[Path, np.ndarray]] = []
    for path in files:
        try:
            batch.append((path, read_image(path)))
        except UnreadableImage as exc:
            skipped[str(path)] = str(exc)
            print(f"skipped: {exc}", file=sys.stderr)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def segment(files: list[Path], out: Path, spec: dict[str, Any], logits_of: Callable[[np.ndarray], np.ndarray],
            fmt: str = "per-class", batch_size: int = 8) -> tuple[int, dict[str, str]]:
    """Segment ``files`` into ``out`` with ``logits_of`` (images (B, 3, S, S) float32 in [0, 1] -> logits
    (B, C, Sm, Sm)) under ``spec`` (``export.json``: classes, image_size, resize); returns (segmented, skipped)."""
    stems = {p: p.stem for p in files}
    if len(set(stems.values())) < len(files):   # same name in two folders: keep both
        stems = {p: f"{p.parent.name}_{p.stem}" for p in files}
    out.mkdir(parents=True, exist_ok=True)
    skipped: dict[str, str] = {}
    done = 0
    for batch in batches(files, batch_size, skipped):
        x = np.stack([model_input(image, spec["image_size"], spec["resize"]) for _, image in batch])
        logits = np.asarray(logits_of(x), np.float32)
        for (path, image), lg in zip(batch, logits, strict=True):
            masks = masks_at_source_size(lg, image.shape[0], image.shape[1], spec["resize"])
            write_outputs(out, stems[path], image, masks, spec["classes"], fmt)
            done += 1
    return done, skipped


def segment_paths(inputs: list[Path], out: Path, spec: dict[str, Any], logits_of: Callable[[np.ndarray], np.ndarray],
                  fmt: str = "per-class", batch_size: int = 8) -> int:
    """:func:`segment` on files and folders (as the command line takes them); prints the summary line and
    returns how many images were segmented."""
    files = image_files(inputs)
    done, skipped = segment(files, out, spec, logits_of, fmt, batch_size)
    tail = f"; {len(skipped)} skipped (see the lines above)" if skipped else ""
    print(f"segmented {done} of {len(files)} image(s) into {out} with {spec.get('label', spec['name'])}{tail}")
    return done


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description="Segment images with the exported model beside this file (onnxruntime).")
    ap.add_argument("inputs", nargs="+", type=Path, help="image files or folders of images")
    ap.add_argument("-o", "--out", type=Path, required=True, help="folder for the masks and overlays")
    ap.add_argument("--format", choices=("per-class", "label"), default="per-class",
                    help="per-class: <stem>_<class>.png (0/255) each; label: <stem>_label.png (0 background, k+1 class k)")
    ap.add_argument("--batch-size", type=int, default=8, help="images per onnxruntime call (default 8)")
    ap.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: its default)")
    args = ap.parse_args(argv)
    import onnxruntime as ort

    spec = json.loads((here / "export.json").read_text())
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.log_severity_level = 3
    session = ort.InferenceSession(str(here / "model.onnx"), options, providers=["CPUExecutionProvider"])
    done = segment_paths(args.inputs, args.out, spec, lambda x: session.run(["logits"], {"images": x})[0], args.format,
                         args.batch_size)
    return 0 if done else 1


if __name__ == "__main__":
    sys.exit(main())
