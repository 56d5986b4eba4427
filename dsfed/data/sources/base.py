"""The contract every data source (phantom generator or real-data importer) fulfils."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

GivenSplit = Literal["train", "test"] | None


@dataclass(frozen=True)
class SourceItem:
    """One sample as listed by a source, before any pixel is decoded.

    Attributes:
        name: unique id of the sample within its source (e.g. the image file's stem, or ``site_a_0007``).
        files: every input file read to make this sample (image first, then mask); hashed into the store.
        split: the split the source's own layout gives ('train'/'test'), or None to let prepare decide.
        label: the original file name shown to users (image path relative to the source root).
    """

    name: str
    files: tuple[Path, ...] = ()
    split: GivenSplit = None
    label: str = ""


@dataclass(frozen=True)
class Sample:
    """A decoded sample at the source's native resolution.

    Attributes:
        image: (H, W, 3) uint8 RGB.
        mask: (K, H, W) bool, one channel per class of ``DataConfig.classes`` (multi-label allowed).
    """

    image: np.ndarray
    mask: np.ndarray
    meta: dict[str, float] = field(default_factory=dict)


class Source(Protocol):
    """A client's data as configured in ``clients.<name>.source``.

    ``items`` lists samples cheaply and in a deterministic order; ``load`` decodes one. Both raise
    :class:`dsfed.errors.SourceError` with a one-line message naming the file or field at fault.
    """

    def items(self) -> list[SourceItem]: ...

    def load(self, item: SourceItem) -> Sample: ...
