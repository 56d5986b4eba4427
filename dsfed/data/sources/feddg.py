"""``kind: feddg``: multi-site fundus in the FedDG layout ``<path>/<domain>/{train,test}/ROIs/{image,mask}/``."""

from __future__ import annotations

from pathlib import Path

from dsfed.data.settings import DataConfig, FedDGSource
from dsfed.data.sources import register_source
from dsfed.data.sources.base import SourceItem
from dsfed.data.sources.images import (
    PairedSource,
    check_mapping,
    named_subfolder,
    source_root,
    split_layout_items,
)


@register_source("feddg")
def build_feddg(spec: FedDGSource, data: DataConfig, root: Path, field: str) -> PairedSource:
    """One FedDG domain; names are ``train/<stem>`` / ``test/<stem>``, the split comes from the folder.

    Masks (same file name as the image) hold 0 = cup, 128 = rim, 255 = background; the default
    ``mask_mapping`` makes cup pixels optic_disc + optic_cup and rim pixels optic_disc only.
    """
    check_mapping(spec.mask_mapping, data.classes, field)
    base = source_root(spec.path, root)

    def list_items() -> list[SourceItem]:
        folder = named_subfolder(base, spec.domain, f"{field}.domain", "domain")
        return split_layout_items(folder, base, ("ROIs", "image"), ("ROIs", "mask"))

    return PairedSource(list_items, spec.mask_mapping, data.classes)
