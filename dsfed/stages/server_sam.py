"""The ``server_sam`` stage's outputs (``artifacts/server_sam/``) and the models it declares: the foundation
SAM it starts from (zero-shot, when it is a dsfed segmenter file) and the fine-tuned server SAM."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from dsfed.stages.producers import ModelEntry

if TYPE_CHECKING:
    from dsfed.config import Params

__all__ = ["generation_ledgers", "produced_models"]


def generation_ledgers(params: Params, artifacts: Path) -> list[Path]:
    """DSFedMed's generation traffic: each source client's uploads and its audit download."""
    names = params.training_clients
    return [artifacts / "generators" / c / "ledger.csv" for c in names] + [artifacts / "quality" / c / "audit_ledger.csv" for c in names]


def _is_segmenter_file(path: Path | None) -> bool:
    """A dsfed segmenter's own weights (keys ``sam.*``/``head.*``), not an official SAM checkpoint."""
    if path is None or not path.is_file() or path.suffix != ".safetensors":
        return False
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return any(k.startswith("head.") for k in fh.keys())


def produced_models(params: Params, artifacts: Path) -> list[ModelEntry]:
    entries = []
    cfg = params.server_sam
    if _is_segmenter_file(cfg.checkpoint):
        entries.append(ModelEntry("foundation", "Foundation SAM (pre-trained, zero-shot)", artifacts, "dsfedmed", [],
                                  "released weights, no client data", checkpoint=cfg.checkpoint, build=(cfg.model, cfg.input_size)))
    entries.append(ModelEntry("server_sam", "SAM before distillation (synthetic fine-tune)", artifacts / "server_sam", "dsfedmed",
                              generation_ledgers(params, artifacts), "server only"))
    return entries
