"""The ``phantom`` source: n deterministic synthetic samples of one site from the sites table."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dsfed.data.phantom import RENDERERS, TASK_CLASSES, load_site_style, render_fundus, sample_rng
from dsfed.data.phantom.fundus import crop_disc_roi
from dsfed.data.phantom.styles import Acquisition
from dsfed.data.settings import DataConfig, PhantomSource
from dsfed.data.sources import register_source
from dsfed.data.sources.base import Sample, SourceItem
from dsfed.errors import SourceError

__all__ = ["PhantomDataSource", "build_phantom"]


class PhantomDataSource:
    """Samples ``0..n-1`` of ``site``; sample i depends only on (seed, site, i), never on n or load order."""

    def __init__(
        self, spec: PhantomSource, style: Acquisition, table: Path, data: DataConfig, field: str
    ) -> None:
        self.spec = spec
        self.style = style
        self.table = table
        self.data = data
        self.field = field

    def items(self) -> list[SourceItem]:
        """n items named ``<site>_<i:04d>``; the sites table is each item's only input file."""
        site, task = self.spec.site, self.spec.task
        return [
            SourceItem(name=f"{site}_{i:04d}", files=(self.table,), label=f"phantom/{task}/{site}/{i:04d}")
            for i in range(self.spec.n)
        ]

    def index_of(self, item: SourceItem) -> int:
        """The sample index encoded in ``item.name``."""
        prefix, _, number = item.name.rpartition("_")
        if prefix != self.spec.site or not number.isdigit():
            raise SourceError(f"{self.field}: {item.name!r} is not a sample of phantom site {self.spec.site!r}")
        return int(number)

    def load(self, item: SourceItem) -> Sample:
        """Render the sample at ``data.image_size``; mask (K, S, S) bool in the order of ``data.classes``."""
        task = self.spec.task
        produced = TASK_CLASSES[task]
        for name in self.data.classes:
            if name not in produced:
                raise SourceError(
                    f"{self.field}.task: phantom task {task!r} has no class {name!r} "
                    f"(it makes: {', '.join(produced)})"
                )
        rng = sample_rng(self.spec.seed, self.spec.site, self.index_of(item))
        size = self.data.image_size
        if self.spec.view == "roi":
            full = round(size * self.spec.roi_zoom)
            image, masks, meta = render_fundus(rng, full, self.style)  # type: ignore[arg-type]
            image, masks = crop_disc_roi(image, masks, rng, size, self.spec.roi_jitter)
            meta = {**meta, "roi_zoom": float(self.spec.roi_zoom)}
        else:
            image, masks, meta = RENDERERS[task](rng, size, self.style)  # type: ignore[operator]
        mask = np.stack([masks[name] for name in self.data.classes])
        return Sample(image=image, mask=mask, meta=meta)


@register_source("phantom")
def build_phantom(spec: PhantomSource, data: DataConfig, root: Path, field: str) -> PhantomDataSource:
    """Resolve the sites table (relative to ``root``) and look up the site's style.

    Raises:
        SourceError: the table is unreadable or invalid, or names no such site.
    """
    table = spec.path if spec.path.is_absolute() else Path(root) / spec.path
    style = load_site_style(table, spec.task, spec.site, field=f"{field}.site")
    return PhantomDataSource(spec, style, table, data, field)
