"""Registry of data sources: ``kind`` in ``clients.<name>.source`` -> builder of a :class:`Source`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from dsfed.data.settings import DataConfig
from dsfed.data.sources.base import Sample, Source, SourceItem

__all__ = ["SOURCES", "Sample", "Source", "SourceItem", "build_source", "register_source"]

SourceBuilder = Callable[[Any, DataConfig, Path, str], Source]
"""(source spec, data config, project root for relative paths, field path for messages) -> Source."""

SOURCES: dict[str, SourceBuilder] = {}


def register_source(kind: str) -> Callable[[SourceBuilder], SourceBuilder]:
    """Decorator: register a builder for ``kind``."""

    def wrap(builder: SourceBuilder) -> SourceBuilder:
        SOURCES[kind] = builder
        return builder

    return wrap


def build_source(spec: Any, data: DataConfig, root: Path, field: str) -> Source:
    """Build the source for a validated spec; ``field`` (``clients.site_b.source``) prefixes errors."""
    _load_builtin_sources()
    return SOURCES[spec.kind](spec, data, root, field)


def _load_builtin_sources() -> None:
    # imported lazily so `dsfed config validate` does not pay for image libraries
    from dsfed.data.sources import feddg, folders, isic, phantom, prostate  # noqa: F401
