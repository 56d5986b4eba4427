"""A tiny federation on phantom stores (sites a, b; h held out) for the federated tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dsfed.config import Params, parse_params
from tests.conftest import phantom_client


def tiny_raw(methods: dict[str, dict[str, object]], rounds: int = 2) -> dict[str, Any]:
    """The params as a params.yaml would hold them."""
    clients = {name: phantom_client(site, n=10, view="roi") for name, site in (("a", "site_a"), ("b", "site_b"), ("h", "site_d"))}
    return {
        "data": {"image_size": 32, "mask_size": 16, "holdout": "h"},
        "prepare": {"split": {"val": 0.2, "test": 0.2}},
        "federated": {"rounds": rounds, "min_clients": 2, "local": {"batch_size": 4, "lr": 1e-3}, "methods": methods},
        "clients": clients,
    }


def tiny_params(root: Path, methods: dict[str, dict[str, object]], rounds: int = 2) -> Params:
    return parse_params(tiny_raw(methods, rounds), root=root)
