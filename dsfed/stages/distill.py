"""The ``distill`` stage's outputs (``artifacts/distill/``) and the models it declares: DSFedMed's distilled
student (deployed to the clients) and SAM."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from dsfed.stages.federated import LABELS, method_folder
from dsfed.stages.producers import ModelEntry
from dsfed.stages.server_sam import generation_ledgers

if TYPE_CHECKING:
    from dsfed.config import Params

__all__ = ["produced_models"]


def produced_models(params: Params, artifacts: Path) -> list[ModelEntry]:
    student = params.distill.student
    generation = generation_ledgers(params, artifacts)
    folder = artifacts / "distill"
    return [
        ModelEntry("dsfedmed_tiny", f"DSFedMed {LABELS.get(student, student).removeprefix('Fed')}", folder / "tiny", "dsfedmed",
                   [method_folder(artifacts, student) / "ledger.csv", *generation, folder / "ledger.csv"]),
        ModelEntry("dsfedmed_sam", "DSFedMed SAM", folder / "sam", "dsfedmed", generation, "server only"),
    ]
