"""The evaluate stage's score cache: a model's per-image test metrics per client, kept between runs.

``evaluate`` scores every model on every client's test split, so one changed model (a method retrained, a
client joined) used to re-score all of them. The cache keys each (model, client) cell by what its numbers
depend on: the model's weights and card (or its released checkpoint), the client's test images and masks,
the stage's settings and device, and the code that scores. A cell whose key is unchanged is read back,
byte for byte what scoring would give again; the rest are scored and stored. After a run the cache holds the
current models only.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dsfed.io import sha256_file, write_json, write_npz
from dsfed.provenance import code_hash

__all__ = ["EVALUATION_CODE", "ScoreCache", "tensor_digest"]

EVALUATION_CODE = ("evaluation", "models", "runtime.py", "stages/evaluate.py", "stages/producers.py")
"""The code a cached score depends on."""


def tensor_digest(*tensors: torch.Tensor) -> str:
    """sha256 of the tensors' shapes, dtypes and bytes (a client's test split: its images and masks)."""
    digest = hashlib.sha256()
    for tensor in tensors:
        value = tensor.detach().cpu().contiguous()
        digest.update(repr((tuple(value.shape), str(value.dtype))).encode())
        digest.update(value.numpy().tobytes())
    return digest.hexdigest()


class ScoreCache:
    """``root/<model key>/<client key>.npz`` (per-image metrics and overlay masks) and ``root/<model key>/model.json``.

    Args:
        root: the cache folder (``artifacts/eval/cache``).
        context: what every score depends on besides the model and the data (settings, device).
    """

    def __init__(self, root: Path, context: dict[str, Any]) -> None:
        self.root = root
        self.context = hashlib.sha256(json.dumps({**context, "code": code_hash(*EVALUATION_CODE)}, sort_keys=True).encode()).hexdigest()
        self.used: set[str] = set()

    def model_key(self, files: list[Path], extra: object = None) -> str:
        """The key of a model: its files' contents (weights, card or checkpoint), ``extra`` and the context."""
        parts = [self.context, repr(extra), *(f"{p.name}:{sha256_file(p)}" for p in files if p.is_file())]
        key = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]
        self.used.add(key)
        return key

    def get(self, model: str, client: str) -> tuple[dict[str, np.ndarray], np.ndarray] | None:
        """(per-image metrics, overlay masks) of a cell, or None."""
        path = self.root / model / f"{client[:32]}.npz"
        if not path.is_file():
            return None
        try:
            with np.load(path) as data:
                metrics = {k.removeprefix("metric_"): data[k] for k in data.files if k.startswith("metric_")}
                return metrics, data["overlay"]
        except (OSError, ValueError, KeyError):
            return None   # a damaged entry is scored again

    def put(self, model: str, client: str, metrics: dict[str, np.ndarray], overlay: np.ndarray) -> None:
        write_npz(self.root / model / f"{client[:32]}.npz", {**{f"metric_{k}": v for k, v in metrics.items()}, "overlay": overlay})

    def get_model(self, model: str) -> dict[str, Any] | None:
        path = self.root / model / "model.json"
        return dict(json.loads(path.read_text())) if path.is_file() else None

    def put_model(self, model: str, values: dict[str, Any]) -> None:
        write_json(self.root / model / "model.json", values)

    def prune(self) -> None:
        """Remove every model folder this run did not use."""
        if self.root.is_dir():
            for folder in self.root.iterdir():
                if folder.name not in self.used:
                    shutil.rmtree(folder, ignore_errors=True)
