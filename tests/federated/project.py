"""A tiny federation on phantom stores (sites a, b; h held out) for the federated tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dsfed.config import Params, parse_params
from tests.conftest import phantom_client

SITES = {"a": "site_a", "b": "site_b", "c": "site_c", "h": "site_d"}


def tiny_raw(methods: dict[str, dict[str, object]], rounds: int = 2, clients: tuple[str, ...] = ("a", "b", "h")) -> dict[str, Any]:
    """The params as a params.yaml would hold them (``h`` is held out)."""
    sources = {name: phantom_client(SITES[name], n=10, view="roi") for name in clients}
    return {
        "data": {"image_size": 32, "mask_size": 16, "holdout": "h"},
        "prepare": {"split": {"val": 0.2, "test": 0.2}},
        "federated": {"rounds": rounds, "min_clients": 2, "local": {"batch_size": 4, "lr": 1e-3}, "methods": methods},
        "clients": sources,
    }


def tiny_params(root: Path, methods: dict[str, dict[str, object]], rounds: int = 2) -> Params:
    return parse_params(tiny_raw(methods, rounds), root=root)
