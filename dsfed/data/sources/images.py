"""Shared helpers for file-based sources: decoding images and masks, mask mappings, folder listing."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from dsfed.data.settings import MaskMapping
from dsfed.data.sources.base import GivenSplit, Sample, SourceItem
from dsfed.errors import SourceError

__all__ = [
    "IMAGE_EXTENSIONS",
    "PairedSource",
    "apply_mask_mapping",
    "check_mapping",
    "check_same_size",
    "index_by_stem",
    "is_image_file",
    "list_images",
    "load_pair",
    "pick_mask",
    "read_image",
    "read_mask",
    "relative_label",
    "require_folder",
    "source_root",
    "split_layout_items",
    "subfolders",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
"""Accepted image/mask extensions (compared case-insensitively)."""

EXTENSIONS_TEXT = ", ".join(IMAGE_EXTENSIONS)
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


# --------------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------------


def _reason(exc: BaseException) -> str:
    """A one-line reason for a decoding failure."""
    if isinstance(exc, UnidentifiedImageError):
        return "not a recognised image format"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _decode(path: Path, what: str, convert: Callable[[Image.Image], np.ndarray]) -> np.ndarray:
    """Open ``path`` fully (``load()`` so truncated files fail here) and convert it to an array."""
    try:
        with Image.open(path) as im:
            im.load()
            return convert(im)
    except SourceError:
        raise
    except Exception as exc:  # PIL raises OSError, ValueError, SyntaxError, DecompressionBombError...
        raise SourceError(f"{path}: cannot read {what} ({_reason(exc)})") from exc


def _wide_to_uint8(arr: np.ndarray) -> np.ndarray:
    """16-bit / int / float grey (H, W) -> uint8: kept if already in 0..255, else stretched min..max."""
    arr = arr.astype(np.float64)
    lo, hi = float(arr.min()), float(arr.max())
    if lo >= 0 and hi <= 255:
        return np.rint(arr).astype(np.uint8)
    if hi <= lo:
        return np.zeros(arr.shape, np.uint8)
    return np.rint((arr - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _image_to_rgb(im: Image.Image) -> np.ndarray:
    if im.mode in _WIDE_MODES:
        grey = _wide_to_uint8(np.asarray(im))
        return np.repeat(grey[:, :, None], 3, axis=2)
    if im.mode != "RGB":
        # L/1/LA -> grey repeated; P -> palette colours; RGBA -> alpha dropped; CMYK/YCbCr -> RGB
        im = im.convert("RGB")
    return np.array(im, dtype=np.uint8)


def read_image(path: Path) -> np.ndarray:
    """Decode an image as (H, W, 3) uint8 RGB.

    Greyscale, 1-bit, palette and RGBA images are converted to RGB (grey repeated, alpha dropped);
    16-bit or float greyscale is kept if its values already lie in 0..255, else stretched min..max.

    Raises:
        SourceError: ``<path>: cannot read image (<reason>)`` for a missing, corrupt or truncated file.
    """
    return _decode(Path(path), "image", _image_to_rgb)


def _mask_to_grey(im: Image.Image) -> np.ndarray:
    if im.mode in _WIDE_MODES:
        arr = np.asarray(im).astype(np.float64)
        if arr.min() >= 0 and arr.max() <= 255:
            return np.rint(arr).astype(np.uint8)
        # 16-bit masks saved full range (0 / 65535): scale to 0..255
        return np.clip(np.rint(arr * (255.0 / 65535.0)), 0, 255).astype(np.uint8)
    if im.mode == "L":
        return np.array(im, dtype=np.uint8)
    if im.mode in ("1", "LA"):
        return np.array(im.convert("L"), dtype=np.uint8)
    rgb = np.array(im.convert("RGB"), dtype=np.uint8)
    if (rgb[:, :, 0] == rgb[:, :, 1]).all() and (rgb[:, :, 0] == rgb[:, :, 2]).all():
        return np.ascontiguousarray(rgb[:, :, 0])
    # coloured masks: ITU-R 601-2 luminance, as PIL's convert("L") (map those grey values in mask_mapping)
    return np.array(Image.fromarray(rgb).convert("L"), dtype=np.uint8)


def read_mask(path: Path) -> np.ndarray:
    """Decode a mask as (H, W) uint8 grey values.

    Grey masks are returned as stored; 1-bit masks become 0/255; palette, RGB and RGBA masks whose
    channels are equal give that channel, coloured ones their luminance (0.299 R + 0.587 G + 0.114 B);
    16-bit masks keep values <= 255 and are otherwise scaled from 0..65535.

    Raises:
        SourceError: ``<path>: cannot read mask (<reason>)``.
    """
    return _decode(Path(path), "mask", _mask_to_grey)


# --------------------------------------------------------------------------------------------------
# Mask mapping
# --------------------------------------------------------------------------------------------------


def check_mapping(mapping: MaskMapping, classes: Sequence[str], field: str) -> None:
    """Check a source's ``mask_mapping`` against ``data.classes`` (field-named errors, before any I/O)."""
    if mapping.threshold is not None:
        if len(classes) != 1:
            raise SourceError(
                f"{field}.mask_mapping.threshold: a threshold gives one class, "
                f"but data.classes has {len(classes)} ({', '.join(classes)})"
            )
        return
    unknown = sorted(mapping.classes() - set(classes))
    if unknown:
        raise SourceError(
            f"{field}.mask_mapping.values: unknown classes {unknown} (data.classes: {', '.join(classes)})"
        )


def _format_values(values: Sequence[int], limit: int = 5) -> str:
    shown = ", ".join(str(int(v)) for v in values[:limit])
    if len(values) > limit:
        shown += f", ... ({len(values)} values)"
    return f"[{shown}]"


def apply_mask_mapping(grey: np.ndarray, mapping: MaskMapping, classes: Sequence[str], path: Path) -> np.ndarray:
    """Turn a (H, W) uint8 grey mask into a (K, H, W) bool mask, channels in the order of ``classes``.

    ``values``: each grey value v maps to the classes of the nearest key within ``tolerance``
    (multi-label; ties go to the lower key); a value near no key is an error.
    ``threshold``: pixels >= threshold are the single class (``classes`` must hold exactly one).

    Raises:
        SourceError: ``<path>: mask values [..] are not in mask_mapping.values (known: 0, 128, 255)``.
    """
    grey = np.asarray(grey, dtype=np.uint8)
    if mapping.threshold is not None:
        if len(classes) != 1:
            raise SourceError(f"{path}: mask_mapping.threshold gives one class, but data.classes has {len(classes)}")
        return (grey >= mapping.threshold)[None, :, :]

    assert mapping.values is not None
    keys = sorted(mapping.values)
    table = np.zeros((len(keys) + 1, len(classes)), dtype=bool)  # last row: unmapped values
    for row, key in enumerate(keys):
        for name in mapping.values[key]:
            if name not in classes:
                raise SourceError(f"{path}: mask_mapping.values maps {key} to unknown class {name!r}")
            table[row, list(classes).index(name)] = True

    keys_arr = np.asarray(keys, dtype=np.int64)
    distance = np.abs(np.arange(256, dtype=np.int64)[:, None] - keys_arr[None, :])  # (256, n_keys)
    nearest = distance.argmin(axis=1)  # argmin takes the first (lower) key on ties
    lut = np.where(distance[np.arange(256), nearest] <= mapping.tolerance, nearest, len(keys))

    present = np.flatnonzero(np.bincount(grey.ravel(), minlength=256))
    bad = present[lut[present] == len(keys)]
    if bad.size:
        known = ", ".join(str(k) for k in keys)
        if mapping.tolerance:
            known += f"; tolerance {mapping.tolerance}"
        values = _format_values(bad.tolist())
        raise SourceError(f"{path}: mask values {values} are not in mask_mapping.values (known: {known})")
    return np.ascontiguousarray(np.moveaxis(table[lut[grey]], -1, 0))


def check_same_size(image: np.ndarray, mask: np.ndarray, image_path: Path, mask_path: Path) -> None:
    """Raise ``<mask>: mask is WxH but image <image> is W'xH'`` unless (H, W, 3) and (H, W) agree."""
    ih, iw = image.shape[:2]
    mh, mw = mask.shape[:2]
    if (ih, iw) != (mh, mw):
        raise SourceError(f"{mask_path}: mask is {mw}x{mh} but image {image_path} is {iw}x{ih}")


def load_pair(image_path: Path, mask_path: Path, mapping: MaskMapping, classes: Sequence[str]) -> Sample:
    """Decode an (image, mask) file pair: image (H, W, 3) uint8, mask (K, H, W) bool."""
    image = read_image(image_path)
    grey = read_mask(mask_path)
    check_same_size(image, grey, image_path, mask_path)
    return Sample(image=image, mask=apply_mask_mapping(grey, mapping, classes, mask_path))


# --------------------------------------------------------------------------------------------------
# Listing
# --------------------------------------------------------------------------------------------------


def source_root(path: Path, root: Path) -> Path:
    """``path`` made absolute against ``root`` (normalised, symlinks kept as written)."""
    path = Path(path).expanduser()
    return Path(os.path.abspath(path if path.is_absolute() else Path(root) / path))


def require_folder(folder: Path, field: str) -> Path:
    """Return ``folder`` or raise ``<field>: folder does not exist (<folder>)``."""
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "folder does not exist"
        raise SourceError(f"{field}: {what} ({folder})")
    return folder


def _entries(folder: Path) -> list[Path]:
    try:
        return sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=lambda p: p.name)
    except OSError as exc:
        raise SourceError(f"{folder}: cannot list folder ({exc.strerror or exc})") from exc


def is_image_file(path: Path) -> bool:
    """True for a visible file with an accepted image extension (case-insensitive)."""
    return not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name (hidden and other files ignored)."""
    return [p for p in _entries(folder) if is_image_file(p)]


def subfolders(folder: Path) -> list[str]:
    """Names of the visible subfolders of ``folder``, sorted."""
    return [p.name for p in _entries(folder) if p.is_dir()]


def named_subfolder(base: Path, name: str, field: str, what: str) -> Path:
    """``base/name`` for a multi-site layout (a FedDG domain, a prostate site), or an error naming
    ``field`` and the subfolders that do exist."""
    require_folder(base, field.rsplit(".", 1)[0] + ".path")
    folder = base / name
    if not folder.is_dir():
        available = ", ".join(subfolders(base)) or "none"
        raise SourceError(f"{field}: no {what} {name!r} in {base} (available: {available})")
    return folder


def no_images_error(folder: Path) -> SourceError:
    """``<folder>: no images found (.png, .jpg, ...)``."""
    return SourceError(f"{folder}: no images found ({EXTENSIONS_TEXT})")


def index_by_stem(paths: Sequence[Path]) -> dict[str, list[Path]]:
    """Group files by stem (``a.png`` and ``a.bmp`` both under ``a``), keeping name order."""
    index: dict[str, list[Path]] = {}
    for path in paths:
        index.setdefault(path.stem, []).append(path)
    return index


def pick_mask(image: Path, candidates: Sequence[Path], expected: str, prefer: str | None = None) -> Path:
    """The one mask among ``candidates`` (``prefer``: a file name that wins a tie).

    Raises:
        SourceError: ``<image>: no mask found (expected <expected>)`` or ``<image>: 2 masks match (a, b)``.
    """
    if not candidates:
        raise SourceError(f"{image}: no mask found (expected {expected})")
    if len(candidates) > 1 and prefer is not None:
        exact = [c for c in candidates if c.name == prefer]
        if len(exact) == 1:
            return exact[0]
    if len(candidates) > 1:
        names = ", ".join(str(c) for c in candidates)
        raise SourceError(f"{image}: {len(candidates)} masks match ({names}); keep one")
    return candidates[0]


def relative_label(path: Path, base: Path) -> str:
    """``path`` relative to ``base`` in POSIX form (the whole path if it lies outside)."""
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return path.as_posix()


def split_layout_items(
    site_dir: Path, base: Path, image_parts: Sequence[str], mask_parts: Sequence[str]
) -> list[SourceItem]:
    """Items of a ``<site_dir>/{train,test}/<image_parts>`` + ``<mask_parts>`` layout (FedDG, prostate).

    Masks share the image's stem (the same file name wins if several extensions exist). Names are
    ``<split>/<stem>``; ``split`` comes from the folder.
    """
    candidates: tuple[Literal["train", "test"], ...] = ("train", "test")
    splits: list[GivenSplit] = [s for s in candidates if (site_dir / s).is_dir()]
    if not splits:
        raise SourceError(f"{site_dir}: no train/ or test/ folder found")
    items: list[SourceItem] = []
    for split in splits:
        assert split is not None
        image_dir = site_dir.joinpath(split, *image_parts)
        mask_dir = site_dir.joinpath(split, *mask_parts)
        for folder in (image_dir, mask_dir):
            if not folder.is_dir():
                raise SourceError(f"{folder}: folder does not exist")
        images = list_images(image_dir)
        if not images:
            raise no_images_error(image_dir)
        masks = index_by_stem(list_images(mask_dir))
        for image in images:
            mask = pick_mask(image, masks.get(image.stem, []), f"{mask_dir}/{image.stem}.*", prefer=image.name)
            items.append(
                SourceItem(
                    name=f"{split}/{image.stem}",
                    files=(image, mask),
                    split=split,
                    label=relative_label(image, base),
                )
            )
    return items


# --------------------------------------------------------------------------------------------------
# The source object shared by every file importer
# --------------------------------------------------------------------------------------------------


class PairedSource:
    """A :class:`~dsfed.data.sources.base.Source` over (image, mask) file pairs.

    ``list_items`` does the layout-specific listing (no decoding); ``items()`` checks names are unique
    and sorts them; ``load()`` decodes the pair, checks sizes and maps the mask.
    """

    def __init__(
        self, list_items: Callable[[], list[SourceItem]], mapping: MaskMapping, classes: Sequence[str]
    ) -> None:
        self._list_items = list_items
        self.mapping = mapping
        self.classes = list(classes)

    def items(self) -> list[SourceItem]:
        """Every sample, sorted by name."""
        items = sorted(self._list_items(), key=lambda item: item.name)
        for before, after in zip(items, items[1:]):
            if before.name == after.name:
                raise SourceError(
                    f"{after.files[0]}: sample id {after.name!r} is also used by {before.files[0]}; rename one"
                )
        return items

    def load(self, item: SourceItem) -> Sample:
        """Decode one sample: image (H, W, 3) uint8, mask (K, H, W) bool."""
        return load_pair(item.files[0], item.files[1], self.mapping, self.classes)
