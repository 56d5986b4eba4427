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

__all__ = ["code_hash", "provenance", "to_safetensors_metadata"]


@lru_cache(maxsize=1)
def code_hash() -> str:
    """SHA-256 (first 16 hex digits) over every ``.py`` file of the ``dsfed`` package (path and bytes)."""
    root = Path(dsfed.__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def provenance(params: dict[str, Any] | None = None) -> dict[str, Any]:
    """``{"command", "params", "dsfed_version", "code_hash"}`` for the json configs and safetensors metadata."""
    return {
        "command": shlex.join(sys.argv),
        "params": params or {},
        "dsfed_version": dsfed.__version__,
        "code_hash": code_hash(),
    }


def to_safetensors_metadata(payload: dict[str, Any]) -> dict[str, str]:
    """safetensors metadata is str -> str: strings stay, everything else becomes compact JSON."""
    return {k: v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str) for k, v in payload.items()}
