"""Shared fixtures: small params for fast stores, the repository root."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from dsfed.config import Params, parse_params

REPO = Path(__file__).resolve().parents[1]


def phantom_client(site: str, n: int = 12, **extra: Any) -> dict[str, Any]:
    return {"source": {"kind": "phantom", "task": "fundus", "path": "sites.yaml", "site": site, "n": n, **extra}}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A scratch project root holding a copy of the phantom site table as ``sites.yaml``."""
    shutil.copy(REPO / "data/phantom/sites.yaml", tmp_path / "sites.yaml")
    return tmp_path


def small_params(root: Path, clients: dict[str, Any] | None = None, **data: Any) -> Params:
    raw = {
        "seed": 0,
        "data": {"classes": ["optic_disc", "optic_cup"], "image_size": 48, "mask_size": 24, **data},
        "prepare": {"split": {"val": 0.2, "test": 0.25}},
        "clients": clients or {"a": phantom_client("site_a"), "b": phantom_client("site_b")},
    }
    return parse_params(raw, root=root)
