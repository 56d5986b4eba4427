"""``kind: isic`` (ISIC 2016-2018 challenge folders) and ``kind: ph2`` (PH2 dermoscopy cases)."""

from __future__ import annotations

from pathlib import Path

from dsfed.data.settings import DataConfig, ISICSource, PH2Source
from dsfed.data.sources import register_source
from dsfed.data.sources.base import SourceItem
from dsfed.data.sources.images import (
    PairedSource,
    check_mapping,
    index_by_stem,
    is_image_file,
    list_images,
    no_images_error,
    pick_mask,
    relative_label,
    require_folder,
    source_root,
)
from dsfed.errors import SourceError

ISIC_MASK_SUFFIXES = ("_segmentation", "_Segmentation")
"""ISIC 2017/2018 name masks ``<id>_segmentation.png``, ISIC 2016 ``<id>_Segmentation.png``."""

PH2_TOP_FOLDERS = ("PH2 Dataset images", "PH2Dataset/PH2 Dataset images")
"""Where the PH2 cases sit inside the unpacked archive, if ``path`` does not point at them directly."""


def _isic_items(base: Path, images_dir: Path, masks_dir: Path) -> list[SourceItem]:
    # ISIC 2017 ships <id>_superpixels.png beside the images: not samples
    images = [p for p in list_images(images_dir) if not p.stem.endswith("_superpixels")]
    if not images:
        raise no_images_error(images_dir)
    masks = index_by_stem(list_images(masks_dir))
    items = []
    for image in images:
        candidates = [m for suffix in ISIC_MASK_SUFFIXES for m in masks.get(image.stem + suffix, [])]
        mask = pick_mask(image, candidates, f"{masks_dir}/{image.stem}_segmentation.png")
        items.append(SourceItem(name=image.stem, files=(image, mask), label=relative_label(image, base)))
    return items


@register_source("isic")
def build_isic(spec: ISICSource, data: DataConfig, root: Path, field: str) -> PairedSource:
    """ISIC layout ``<path>/<images>/<id>.jpg`` + ``<path>/<masks>/<id>_segmentation.png``; names are ids."""
    check_mapping(spec.mask_mapping, data.classes, field)
    base = source_root(spec.path, root)

    def list_items() -> list[SourceItem]:
        require_folder(base, f"{field}.path")
        images_dir = require_folder(source_root(Path(spec.images), base), f"{field}.images")
        masks_dir = require_folder(source_root(Path(spec.masks), base), f"{field}.masks")
        return _isic_items(base, images_dir, masks_dir)

    return PairedSource(list_items, spec.mask_mapping, data.classes)


def _ph2_cases(folder: Path) -> list[Path]:
    """Case folders ``<id>/`` holding ``<id>_Dermoscopic_Image/``, sorted by name."""
    if not folder.is_dir():
        return []
    cases = [p for p in folder.iterdir() if not p.name.startswith(".") and p.is_dir()]
    return sorted((p for p in cases if (p / f"{p.name}_Dermoscopic_Image").is_dir()), key=lambda p: p.name)


def _ph2_file(folder: Path, stem: str) -> list[Path]:
    """Image files ``<folder>/<stem>.<ext>`` (``.bmp`` in the real set, any accepted extension here)."""
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if p.stem == stem and is_image_file(p)), key=lambda p: p.name)


def _ph2_items(base: Path, field: str) -> list[SourceItem]:
    cases = _ph2_cases(base)
    for top in PH2_TOP_FOLDERS:
        if cases:
            break
        cases = _ph2_cases(base / top)
    if not cases:
        raise SourceError(
            f"{field}.path: no PH2 cases in {base} (expected <id>/<id>_Dermoscopic_Image/<id>.bmp, "
            f"directly or under '{PH2_TOP_FOLDERS[0]}/')"
        )
    items = []
    for case in cases:
        case_id = case.name
        image_dir = case / f"{case_id}_Dermoscopic_Image"
        images = _ph2_file(image_dir, case_id)
        if not images:
            raise SourceError(f"{image_dir}: no image found (expected {image_dir}/{case_id}.bmp)")
        if len(images) > 1:
            raise SourceError(f"{image_dir}: {len(images)} images match ({', '.join(map(str, images))}); keep one")
        mask_dir = case / f"{case_id}_lesion"
        mask = pick_mask(images[0], _ph2_file(mask_dir, f"{case_id}_lesion"), f"{mask_dir}/{case_id}_lesion.bmp")
        items.append(SourceItem(name=case_id, files=(images[0], mask), label=relative_label(images[0], base)))
    return items


@register_source("ph2")
def build_ph2(spec: PH2Source, data: DataConfig, root: Path, field: str) -> PairedSource:
    """PH2 layout ``<path>/<id>/<id>_Dermoscopic_Image/<id>.bmp`` + ``<id>_lesion/<id>_lesion.bmp``.

    ``path`` may also be the archive folder holding ``PH2 Dataset images/``; names are case ids.
    """
    check_mapping(spec.mask_mapping, data.classes, field)
    base = source_root(spec.path, root)

    def list_items() -> list[SourceItem]:
        require_folder(base, f"{field}.path")
        return _ph2_items(base, field)

    return PairedSource(list_items, spec.mask_mapping, data.classes)
