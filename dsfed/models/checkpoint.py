"""Loading weights from local files: official ``.pth`` with ``weights_only=True``, safetensors otherwise."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from dsfed.errors import DsfedError

__all__ = ["CheckpointError", "LoadReport", "load_weights", "read_state_dict"]

log = logging.getLogger(__name__)
WRAPPER_KEYS = ("model", "state_dict", "module")


class CheckpointError(DsfedError):
    """A checkpoint cannot be read, or does not fit the model."""


@dataclass(frozen=True)
class LoadReport:
    """What a load did: keys the model expected but the file lacks, keys the file has that the model lacks."""

    missing: list[str]
    unexpected: list[str]
    mismatched: list[str]


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a state dict from ``.pth``/``.pt``/``.bin`` (``torch.load(weights_only=True)``) or ``.safetensors``.

    A top-level ``{"model": ...}`` / ``{"state_dict": ...}`` wrapper (training checkpoints) is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file does not exist")
    state: Any
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad checkpoint
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: cannot read checkpoint ({reason})") from exc
    for key in WRAPPER_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict) and not any(isinstance(v, Tensor) for v in state.values()):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: not a state dict of tensors")
    return state


def load_weights(module: nn.Module, state: dict[str, Tensor], strict: bool = True, source: str = "checkpoint") -> LoadReport:
    """Load ``state`` into ``module``; strict by default.

    Strict: any missing, unexpected or shape-mismatched key raises :class:`CheckpointError` listing every
    one of them. Non-strict: the matching keys load and a warning lists every key left out.
    """
    own = module.state_dict()
    # BatchNorm's step counter is not a weight; PyTorch itself fills it in when a checkpoint lacks it
    missing = sorted(k for k in own if k not in state and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in state if k not in own)
    mismatched = sorted(
        f"{k} (file {tuple(state[k].shape)}, model {tuple(own[k].shape)})" for k in own.keys() & state.keys() if own[k].shape != state[k].shape
    )
    report = LoadReport(missing, unexpected, mismatched)
    problems = _describe(report)
    if strict and problems:
        raise CheckpointError(f"{source}: does not fit {type(module).__name__}: {problems}")
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    module.load_state_dict(usable, strict=False)
    if problems:
        log.warning("%s: non-strict load into %s: %s", source, type(module).__name__, problems)
    return report


def _describe(report: LoadReport) -> str:
    parts = []
    for label, keys in (("missing", report.missing), ("unexpected", report.unexpected), ("shape mismatch", report.mismatched)):
        if keys:
            parts.append(f"{len(keys)} {label} [{', '.join(keys)}]")
    return "; ".join(parts)
