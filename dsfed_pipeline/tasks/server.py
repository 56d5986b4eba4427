"""Tasks of the server-side DSFedMed stages: ``server_sam`` and ``distill``.

Each task takes and returns paths and small summaries (never tensors); the dsfed functions it calls do
the work and write their outputs atomically. The server side never reads ``artifacts/clients``: the source
clients score the models on their own val splits and send back metrics only, and every client receives the
distilled student (through Flower's nodes with ``federated.engine`` flower or simulation).
"""

from __future__ import annotations

from typing import Any

from prefect import task

from dsfed.config import load_params


@task(name="finetune-server-sam")
def finetune(params_path: str, artifacts: str) -> dict[str, Any]:
    """Fine-tune the foundation SAM on the union of the source clients' synthetic sets."""
    from dsfed.stages.server_sam import run_server_sam_stage

    return run_server_sam_stage(load_params(params_path), artifacts, params_path=params_path)


@task(name="mutual-distillation")
def distill(params_path: str, artifacts: str) -> dict[str, Any]:
    """Learnability-guided mutual distillation between the server SAM and the federated student."""
    from dsfed.stages.distill import run_distill_stage

    return run_distill_stage(load_params(params_path), artifacts, params_path=params_path)
