"""Settings of the ``distill`` stage (DSFedMed's learnability-guided mutual distillation)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from dsfed.settings import Device, Strict

__all__ = ["DistillConfig"]


class DistillConfig(Strict):
    """``distill``, at the server: learnability-guided mutual distillation between the server SAM and the
    federated ``student`` (DSFedMed: FedTinySAM) on the synthetic sets (``dsfed.distill``).

    Score s_i = lam * (-GT loss of SAM) + (1 - lam) * symmetric KL at ``temperature``; ``selection: pool``
    draws ``rate`` * N samples with probability proportional to exp(s_i / tau) each round;
    ``batch_topk`` is the released code's per-batch rule (``quantile``, ``keep``); ``all`` trains on every
    sample. ``mutual: false`` lets SAM only teach. ``warm_start`` begins from the previous run's distilled
    models when they exist (a client joined), else from ``server_sam`` and the student.

    Every round, both models are also scored on the source clients' real val splits (only metrics cross);
    each ships only if a distilled round beats the model before distillation there (the guard,
    :mod:`dsfed.distill.guard`). ``weak_teacher``: what to do when that validation finds SAM weaker than
    its student before distillation: ``distill`` anyway (the guard still keeps the better model) or
    ``skip`` the rounds and ship the student as it is.
    """

    student: str = "fedtinysam"
    rounds: Annotated[int, Field(ge=1)] = 4
    lam: Annotated[float, Field(ge=0, le=1)] = 0.5
    temperature: Annotated[float, Field(gt=0)] = 1.0
    tau: Annotated[float, Field(gt=0)] = 1.0
    rate: Annotated[float, Field(gt=0, le=1)] = 0.5
    selection: Literal["pool", "batch_topk", "all"] = "pool"
    mutual: bool = True
    w_gt: Annotated[float, Field(ge=0)] = 1.0
    w_kl: Annotated[float, Field(ge=0)] = 1.0
    batch_size: Annotated[int, Field(ge=1)] = 4
    lr_sam: Annotated[float, Field(gt=0)] = 1e-4
    lr_tiny: Annotated[float, Field(gt=0)] = 1e-4
    freeze_sam_encoder: bool = False
    # with freeze_sam_encoder: SAM's image embeddings computed once per run, the rounds running only its decoder
    # (float32 on the CPU: 4 MB an image at 1024 px; false recomputes them in every batch)
    cache_embeddings: bool = True
    quantile: Annotated[float, Field(gt=0, le=1)] = 0.7
    keep: Annotated[float, Field(gt=0, le=1)] = 0.5
    warm_start: bool = True
    weak_teacher: Literal["distill", "skip"] = "distill"
    device: Device = "auto"
