"""The model-producer registry: each stage declares the models it produces; ``evaluate`` and the report
discover them, so a method adds its rows by registering a producer, with no edit to either.

A producer is ``producer(params, artifacts) -> list[ModelEntry]`` (every model it would produce; the ones
whose stage has not run yet are dropped by :func:`produced_models`). ``PRODUCERS`` maps a producer's name to
it, or to its ``module:function`` path (imported on use), in table order.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from dsfed.config import Params
    from dsfed.models.segmenter import Segmenter

__all__ = ["PRODUCERS", "ModelEntry", "Producer", "produced_models"]


@dataclass
class ModelEntry:
    """One model of the tables.

    Attributes:
        key: stable id (the key in ``artifacts/eval/metrics.json``).
        label: what the report shows.
        folder: the folder with its card (``model.json``) and weights (``model.safetensors``).
        group: the table section it belongs to (``federated``, ``dsfedmed``, ``samfed``...).
        ledgers: every ledger whose bytes make up its communication.
        note: a short remark for the efficiency table.
        checkpoint: a released segmenter file instead of a stage folder (the foundation SAM).
        build: for ``checkpoint`` entries, ``(model name, input size)`` to rebuild it with.
    """

    key: str
    label: str
    folder: Path
    group: str
    ledgers: list[Path] = field(default_factory=list)
    note: str = ""
    checkpoint: Path | None = None
    build: tuple[str, int | None] | None = None

    def load(self, classes: list[str], output_size: int, device: torch.device) -> Segmenter:
        """The model in eval mode on ``device``, loaded strictly (a released checkpoint's head by class name)."""
        if self.checkpoint is not None:
            from dsfed.models import build_model

            name, input_size = self.build or ("sam_demo", None)
            return build_model(name, num_classes=len(classes), output_size=output_size, input_size=input_size,
                               checkpoint=self.checkpoint, classes=tuple(classes)).to(device).eval()
        from dsfed.models.card import load_carded_model

        return load_carded_model(self.folder, len(classes), output_size, device=device)

    @property
    def available(self) -> bool:
        return self.checkpoint.is_file() if self.checkpoint is not None else (self.folder / "model.json").is_file()


Producer = Callable[["Params", Path], list[ModelEntry]]

PRODUCERS: dict[str, str | Producer] = {
    "federated": "dsfed.stages.federated:produced_models",
    "server_sam": "dsfed.stages.server_sam:produced_models",
    "distill": "dsfed.stages.distill:produced_models",
}


def _resolve(producer: str | Producer) -> Producer:
    if callable(producer):
        return producer
    module, _, name = producer.partition(":")
    found: Any = getattr(importlib.import_module(module), name)
    return found  # type: ignore[no-any-return]


def produced_models(params: Params, artifacts: str | Path) -> list[ModelEntry]:
    """Every model whose stage has run, producer by producer in registry order; keys must be unique."""
    entries: list[ModelEntry] = []
    for name, producer in PRODUCERS.items():
        for entry in _resolve(producer)(params, Path(artifacts)):
            if any(e.key == entry.key for e in entries):
                raise ValueError(f"model producer {name!r}: model key {entry.key!r} is produced twice")
            entries.append(entry)
    return [e for e in entries if e.available]
