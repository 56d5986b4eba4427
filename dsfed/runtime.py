"""Small runtime helpers every stage uses: which device to run on, with reproducible kernels."""

from __future__ import annotations

import torch

__all__ = ["pick_device"]


def pick_device(choice: str) -> torch.device:
    """``auto``: CUDA when present, else the CPU; ``cuda`` / ``cpu`` as given.

    On the CPU it also switches PyTorch to its deterministic kernels: the backward of an indexed
    gather (``attention_biases[:, idxs]`` in TinyViT, SAM's relative positions) accumulates with
    threads in whatever order they finish, so on a loaded 2-core machine the same run gave
    different weights (a FedTinySAM round differed 3 runs in 4 under a busy core; with this, 0 in 5
    and the quiet run's result). PyTorch's companion setting, filling every new tensor with NaN to expose
    reads of uninitialised memory, is turned off: it made a U-Net training step 2.3x slower.
    CUDA keeps the fast kernels (its determinism needs cuBLAS workspace settings of its own).
    """
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]
    return torch.device("cpu")
