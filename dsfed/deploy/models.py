"""Which model ``dsfed predict`` runs: a name the pipeline's tables use, or a folder with a card and weights.

Names are the keys of ``evaluate``'s producer registry (:mod:`dsfed.stages.producers`: ``fedtinysam``,
``dsfedmed_tiny``, ``server_sam``...), plus the aliases a hospital would type for what it deploys
(``dsfed-tinysam`` is the distilled student). A path is a folder holding ``model.json`` and
``model.safetensors`` (what every stage writes), or the ``.safetensors`` file inside one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dsfed.errors import DsfedError

if TYPE_CHECKING:
    import torch

    from dsfed.config import Params
    from dsfed.models.segmenter import Segmenter
    from dsfed.stages.producers import ModelEntry

__all__ = ["ALIASES", "ResolvedModel", "resolve_model"]

ALIASES = {"dsfed-tinysam": "dsfedmed_tiny", "dsfed-student": "dsfedmed_tiny", "dsfed-sam": "dsfedmed_sam"}
"""Deployment names -> producer keys."""


@dataclass(frozen=True)
class ResolvedModel:
    """A model to run: what it is called, where its card and weights are, and the entry that loads it."""

    name: str
    label: str
    entry: ModelEntry

    def load(self, classes: list[str], output_size: int, device: torch.device) -> Segmenter:
        """The model in eval mode on ``device``."""
        return self.entry.load(classes, output_size, device)


def _folder_entry(path: Path) -> ModelEntry:
    from dsfed.stages.producers import ModelEntry

    folder = path.parent if path.is_file() else path
    if not (folder / "model.json").is_file() or not (folder / "model.safetensors").is_file():
        raise DsfedError(f"{path}: not a model folder (it needs model.json and model.safetensors, as every stage writes)")
    return ModelEntry(folder.name, str(folder), folder, "path")


def resolve_model(spec: str, params: Params, artifacts: Path) -> ResolvedModel:
    """The model ``spec`` names: a producer key or alias, else a path. One line naming the choices otherwise."""
    from dsfed.stages.producers import produced_models

    key = ALIASES.get(spec, spec)
    entries = {e.key: e for e in produced_models(params, artifacts)}
    if key in entries:
        return ResolvedModel(spec, entries[key].label, entries[key])
    path = Path(spec)
    if path.exists():
        entry = _folder_entry(path)
        return ResolvedModel(spec, entry.label, entry)
    have = ", ".join([*(a for a, k in ALIASES.items() if k in entries), *entries]) or "none yet: run `dvc repro` first"
    raise DsfedError(f"model {spec!r}: no such model name or path (names with a model under {artifacts}: {have})")
