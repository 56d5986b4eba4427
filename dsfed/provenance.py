"""Provenance of produced weights and runs: command line, call parameters, dsfed version, a hash of the code."""

from __future__ import annotations

import hashlib
import json
import shlex
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

import dsfed

__all__ = ["CONTROLNET_CODE", "DISTILL_CODE", "FEDERATED_CODE", "ROUNDS_CODE", "SYNTHESIZE_CODE", "code_hash", "provenance", "to_safetensors_metadata"]

ROUNDS_CODE = ("federated", "models", "training", "data", "evaluation", "runtime.py", "round_checkpoints.py")
"""The code any federated rounds' numbers depend on (the rounds engine, models, training, data, evaluation)."""
FEDERATED_CODE = (*ROUNDS_CODE, "stages/federated_run.py")
"""The code a federated run's numbers depend on (its resume identity; edits elsewhere keep its checkpoints)."""
DISTILL_CODE = ("distill", "models", "training", "data", "server", "evaluation", "federated", "runtime.py", "round_checkpoints.py",
                "stages/distill.py", "stages/client_validation.py")
"""The code a distillation run's numbers depend on."""
CONTROLNET_CODE = ("generation/client.py", "generation/node.py", "generation/train.py", "generation/condition.py",
                   "generation/controlnet.py", "runtime.py", "stages/controlnet.py", "stages/client_tasks.py")
"""The code the ``controlnet`` stage depends on (its ``dvc.yaml`` deps): the hash its upload carries, so an edit
elsewhere in the package (which DVC rightly does not rerun it for) would not change its bytes if it were rerun."""
SYNTHESIZE_CODE = ("generation/server.py", "generation/sample.py", "generation/condition.py", "runtime.py", "stages/synthesize.py")
"""The code the ``synthesize`` stage depends on (its ``dvc.yaml`` deps)."""


@lru_cache(maxsize=16)
def code_hash(*parts: str) -> str:
    """SHA-256 (first 16 hex digits) over the ``.py`` files (path and bytes) of the ``dsfed`` package, or of
    its sub-packages / modules ``parts`` (e.g. ``"federated", "models"``): the code a result depends on."""
    root = Path(dsfed.__file__).resolve().parent
    digest = hashlib.sha256()
    files = [p for part in parts for p in ((root / part).rglob("*.py") if (root / part).is_dir() else [root / part])] if parts else root.rglob("*.py")
    for path in sorted(set(files)):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _portable(program: str) -> str:
    """``program`` relative to the working directory when it lies under it (a checkout's own path stays out of
    the bytes, so the same run in another folder or on another machine writes the same file), else its name."""
    path = Path(program)
    if not path.is_absolute():
        return program
    try:
        return path.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return path.name


def provenance(params: dict[str, Any] | None = None, code: tuple[str, ...] = ()) -> dict[str, Any]:
    """``{"command", "params", "dsfed_version", "code_hash"}`` for the json configs and safetensors metadata;
    the hash covers ``code`` (parts as :func:`code_hash` takes them; the whole package when empty)."""
    return {
        "command": shlex.join([_portable(sys.argv[0]), *sys.argv[1:]]) if sys.argv else "",
        "params": params or {},
        "dsfed_version": dsfed.__version__,
        "code_hash": code_hash(*code),
    }


def to_safetensors_metadata(payload: dict[str, Any]) -> dict[str, str]:
    """safetensors metadata is str -> str: strings stay, everything else becomes compact JSON."""
    return {k: v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str) for k, v in payload.items()}
