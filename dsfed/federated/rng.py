"""The process-wide random generators, seeded for one piece of client work and restored after it.

Most randomness in dsfed is drawn from explicit generators, but some lives in libraries that only use the
global ones: MONAI EfficientNet's drop-connect and ``nn.Dropout`` draw from torch's global generator, some
augmentations from numpy's or Python's. A Flower node is a fresh process whose global generators start
wherever the import of its libraries left them, so without this a dropout model trained differently on
every engine (and differently after a restart). Seeding them per (run seed, client, round) makes a round's
result a function of its inputs only.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

__all__ = ["global_rngs_seeded"]


@contextmanager
def global_rngs_seeded(seed: int) -> Iterator[None]:
    """Seed torch's (CPU and every CUDA device's), numpy's and Python's global generators with ``seed``
    inside the block; restore their earlier states when it ends, however it ends.

    Args:
        seed: a non-negative integer (numpy takes the low 32 bits).
    """
    python_state = random.getstate()
    numpy_state = np.random.get_state()
    with torch.random.fork_rng(devices=range(torch.cuda.device_count()) if torch.cuda.is_initialized() else []):
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)
