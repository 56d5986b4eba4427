"""A round checkpoint's RNG file is a function of the run, not of what else in the process drew random numbers."""

from __future__ import annotations

import io
import random

import numpy as np
import torch

from dsfed.federated.checkpoint import capture_rng, restore_rng


def _rng_bytes() -> bytes:
    buffer = io.BytesIO()
    torch.save(capture_rng(), buffer)
    return buffer.getvalue()


def test_pythons_global_generator_stays_out_of_rng_pt_and_torch_and_numpy_round_trip() -> None:
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    before = _rng_bytes()
    for _ in range(5):  # what Prefect's websocket keepalive pings do on their own clock in a background thread
        random.getrandbits(32)
    assert _rng_bytes() == before
    state = capture_rng()
    expected = (torch.rand(3), np.random.rand(3))
    restore_rng(state)
    again = (torch.rand(3), np.random.rand(3))
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1])
    legacy = {**state, "python": {"version": 3, "internal": list(random.getstate()[1]), "gauss_next": None}}
    restore_rng(legacy)  # a checkpoint written before Python's state was left out still resumes
