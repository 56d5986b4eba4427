"""Small runtime helpers every stage uses: which device to run on."""

from __future__ import annotations

import torch

__all__ = ["pick_device"]


def pick_device(choice: str) -> torch.device:
    """``auto``: CUDA when present, else the CPU; ``cuda`` / ``cpu`` as given."""
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")
