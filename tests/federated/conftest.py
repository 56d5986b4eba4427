"""Federated tests run their tiny models on one torch thread (two OpenMP threads on tiny ops stall when the CPU is shared)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from dsfed.data.store import build_client_store
from dsfed.stages.prepare import store_path
from tests.federated.project import tiny_params


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def stores(project: Path) -> Path:
    params = tiny_params(project, {})
    for name in params.clients:
        build_client_store(params, name, store_path(project / "artifacts", name), root=project, progress=False)
    return project / "artifacts"
