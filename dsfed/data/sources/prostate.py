"""``kind: prostate``: multi-site prostate slices ``<path>/<site>/{train,test}/{image,mask}/``."""

from __future__ import annotations

from pathlib import Path

from dsfed.data.settings import DataConfig, ProstateSource
from dsfed.data.sources import register_source
from dsfed.data.sources.base import SourceItem
from dsfed.data.sources.images import (
    PairedSource,
    check_mapping,
    named_subfolder,
    source_root,
    split_layout_items,
)


@register_source("prostate")
def build_prostate(spec: ProstateSource, data: DataConfig, root: Path, field: str) -> PairedSource:
    """One prostate site; grey slices are repeated to (H, W, 3), masks mapped by ``mask_mapping``.

    Names are ``train/<stem>`` / ``test/<stem>``; the split comes from the folder.
    """
    check_mapping(spec.mask_mapping, data.classes, field)
    base = source_root(spec.path, root)

    def list_items() -> list[SourceItem]:
        folder = named_subfolder(base, spec.site, f"{field}.site", "site")
        return split_layout_items(folder, base, ("image",), ("mask",))

    return PairedSource(list_items, spec.mask_mapping, data.classes)
