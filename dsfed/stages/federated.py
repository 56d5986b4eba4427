"""The ``federated@<method>`` stages' outputs under ``artifacts/federated/<method>/``, and the models they produce."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from dsfed.federated.registry import CENTRALIZED
from dsfed.stages.producers import ModelEntry

if TYPE_CHECKING:
    from dsfed.config import Params

__all__ = ["LABELS", "method_folder", "produced_models"]

LABELS = {
    "fedunet": "FedU-Net", "fednnunet": "FednnU-Net", "fedtinysam": "FedTinySAM", "fedsam": "FedSAM",
    "fedmsa": "FedMSA", "fedunet_lite0": "FedU-Net (ImageNet Lite0)", "centralized": "Centralized SAM",
}
"""Display names of the embedded default's methods; any other method shows under its own name."""


def method_folder(artifacts: Path, method: str) -> Path:
    """Where ``federated@<method>`` writes its model, card, metrics, ledger and checkpoints."""
    return artifacts / "federated" / method


def produced_models(params: Params, artifacts: Path) -> list[ModelEntry]:
    """One model per federated method, its ledger as its communication (none for pooled training)."""
    entries = []
    for method, spec in params.federated.methods.items():
        folder = method_folder(artifacts, method)
        pooled = spec.strategy == CENTRALIZED
        note = "pooled raw data (not federated)" if pooled else "adapters + decoder travel; encoder frozen" if spec.adapter == "msa" else ""
        entries.append(ModelEntry(method, LABELS.get(method, method), folder, "federated", [] if pooled else [folder / "ledger.csv"], note))
    return entries
