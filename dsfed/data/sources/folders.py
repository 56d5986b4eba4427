"""``kind: folders``: generic ``<path>/<images>/`` + ``<path>/<masks>/`` folders with a pairing rule."""

from __future__ import annotations

import re
from pathlib import Path

from dsfed.data.settings import DataConfig, FoldersSource
from dsfed.data.sources import register_source
from dsfed.data.sources.base import SourceItem
from dsfed.data.sources.images import (
    PairedSource,
    check_mapping,
    index_by_stem,
    list_images,
    no_images_error,
    pick_mask,
    relative_label,
    require_folder,
    source_root,
)
from dsfed.errors import SourceError


def _suffix_items(base: Path, images_dir: Path, masks_dir: Path, suffix: str) -> list[SourceItem]:
    """Pair ``<stem>.<ext>`` with ``<stem><suffix>.<any ext>``; names are image stems."""
    images = list_images(images_dir)
    if images_dir == masks_dir:  # one folder holding both: masks are not images
        images = [p for p in images if not p.stem.endswith(suffix)]
    if not images:
        raise no_images_error(images_dir)
    masks = index_by_stem(list_images(masks_dir))
    items = []
    for image in images:
        stem = image.stem + suffix
        mask = pick_mask(image, masks.get(stem, []), f"{masks_dir}/{stem}.*")
        items.append(SourceItem(name=image.stem, files=(image, mask), label=relative_label(image, base)))
    return items


def _regex_items(
    base: Path, images_dir: Path, masks_dir: Path, image_regex: str, mask_regex: str
) -> list[SourceItem]:
    """Pair files whose names give the same ``(?P<id>...)`` (``re.search``); names are the ids."""
    image_rx, mask_rx = re.compile(image_regex), re.compile(mask_regex)
    images = []
    for path in list_images(images_dir):
        match = image_rx.search(path.name)
        if match is None or (images_dir == masks_dir and mask_rx.search(path.name)):
            continue
        images.append((match.group("id"), path))
    if not images:
        raise SourceError(f"{images_dir}: no images found matching pairing.image_regex {image_regex!r}")
    masks: dict[str, list[Path]] = {}
    for path in list_images(masks_dir):
        match = mask_rx.search(path.name)
        if match is not None:
            masks.setdefault(match.group("id"), []).append(path)
    items = []
    for sample_id, image in images:
        expected = f"a file in {masks_dir} matching {mask_regex!r} with id {sample_id!r}"
        mask = pick_mask(image, masks.get(sample_id, []), expected)
        items.append(SourceItem(name=sample_id, files=(image, mask), label=relative_label(image, base)))
    return items


@register_source("folders")
def build_folders(spec: FoldersSource, data: DataConfig, root: Path, field: str) -> PairedSource:
    """A source over ``<path>/<images>/`` paired with ``<path>/<masks>/`` (nothing is read until ``items``)."""
    check_mapping(spec.mask_mapping, data.classes, field)
    base = source_root(spec.path, root)
    pairing = spec.pairing

    def list_items() -> list[SourceItem]:
        require_folder(base, f"{field}.path")
        images_dir = require_folder(source_root(Path(spec.images), base), f"{field}.images")
        masks_dir = require_folder(source_root(Path(spec.masks), base), f"{field}.masks")
        if pairing.image_regex is not None and pairing.mask_regex is not None:
            return _regex_items(base, images_dir, masks_dir, pairing.image_regex, pairing.mask_regex)
        return _suffix_items(base, images_dir, masks_dir, pairing.mask_suffix)

    return PairedSource(list_items, spec.mask_mapping, data.classes)
