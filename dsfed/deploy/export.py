"""``dsfed export MODEL --format onnx``: the model as an ONNX graph a hospital runs with onnxruntime.

The export folder is self-describing: ``model.onnx`` (input ``images`` (B, 3, S, S) float in [0, 1], output
``logits`` (B, C, Sm, Sm), any batch size), ``export.json`` (classes, image and mask size, resize mode, the
parity check and timings) and the model card, so ``dsfed predict EXPORT_FOLDER ...`` needs no params file.
The graph comes from PyTorch's dynamo exporter (``torch.onnx.export(dynamo=True)``, opset 18: the only one
that exports the antialiased resize the U-Nets' heads use) and is checked against PyTorch on the test images.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dsfed.errors import DsfedError
from dsfed.io import atomic_path, write_json
from dsfed.models.segmenter import Segmenter

__all__ = ["EXPORT_JSON", "ONNX_FILE", "OnnxSegmenter", "export_onnx", "is_export", "parity", "time_ms"]

log = logging.getLogger(__name__)
ONNX_FILE = "model.onnx"
EXPORT_JSON = "export.json"
OPSET = 18


def export_onnx(model: Segmenter, path: Path, image_size: int) -> None:
    """Write ``model`` (eval mode, CPU, prompt-free) as ONNX with a dynamic batch axis, atomically."""
    if model.prompt == "box":
        raise DsfedError("this model takes box prompts: only prompt-free models are exported")
    example = torch.rand(2, 3, image_size, image_size)
    with atomic_path(path, overwrite=True) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model.eval().cpu(), (example,), input_names=["images"], output_names=["logits"],
                                    dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},), dynamo=True,
                                    opset_version=OPSET, verbose=False)
        if program is None:
            raise DsfedError("torch.onnx.export returned no program")
        program.save(str(tmp))


def is_export(folder: Path) -> bool:
    """True for a folder ``dsfed export`` wrote (``model.onnx`` and ``export.json``)."""
    return (folder / ONNX_FILE).is_file() and (folder / EXPORT_JSON).is_file()


@dataclass
class OnnxSegmenter:
    """An exported model run by onnxruntime, called like a :class:`Segmenter`: images (B, 3, S, S) float in
    [0, 1] -> logits (B, C, Sm, Sm). ``spec`` is its ``export.json``."""

    folder: Path
    threads: int = 0

    def __post_init__(self) -> None:
        import onnxruntime as ort

        if not is_export(self.folder):
            raise DsfedError(f"{self.folder}: not an export folder (it needs {ONNX_FILE} and {EXPORT_JSON}, as dsfed export writes)")
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(self.folder / ONNX_FILE), options, providers=["CPUExecutionProvider"])
        self.spec: dict[str, Any] = json.loads((self.folder / EXPORT_JSON).read_text())
        self.prompt = "none"

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        out = self.session.run(["logits"], {"images": images.detach().cpu().numpy().astype(np.float32)})[0]
        return torch.from_numpy(np.asarray(out))

    def eval(self) -> OnnxSegmenter:
        return self


def _dice(logits: np.ndarray, truth: np.ndarray) -> float:
    """Mean over images and classes of ``evaluate``'s Dice (:func:`per_image_metrics`: foreground where the logit
    > 0; both empty scores 1) of ``logits`` against boolean ``truth`` (N, C, H, W)."""
    from dsfed.evaluation.metrics import per_image_metrics

    return float(per_image_metrics(torch.from_numpy(logits), torch.from_numpy(truth.astype(np.float32)))["dice"].mean())


def parity(model: Segmenter, exported: Any, images: torch.Tensor, masks: torch.Tensor | None,
           batch: int = 16) -> dict[str, Any]:
    """PyTorch vs the export (an :class:`OnnxSegmenter` or a TorchScript module) on ``images`` (N, 3, S, S): the
    largest absolute logit difference, the Dice between their masks, the pixels whose mask differs, and (with
    ``masks`` (N, C, Sm, Sm)) each one's Dice against the ground truth."""
    with torch.no_grad():
        ref = torch.cat([model(images[i : i + batch]) for i in range(0, len(images), batch)]).numpy()
    with torch.no_grad():
        got = torch.cat([exported(images[i : i + batch]) for i in range(0, len(images), batch)]).numpy()
    out: dict[str, Any] = {"images": len(images), "max_abs_logit_difference": float(np.abs(ref - got).max()),
                           "mask_dice_pytorch_vs_export": _dice(got, ref > 0),
                           "pixels_differing": int(((ref > 0) != (got > 0)).sum())}
    if masks is not None:
        truth = masks.numpy() > 0.5
        out["dice_vs_truth"] = {"pytorch": _dice(ref, truth), "export": _dice(got, truth)}
    return out


def time_ms(run: Any, images: torch.Tensor, warmup: int = 2) -> float:
    """Median batch-1 wall time of ``run(image)`` over ``images``, in ms (a measurement: not a hashed output)."""
    for i in range(min(warmup, len(images))):
        run(images[i : i + 1])
    times = []
    for i in range(len(images)):
        t0 = time.perf_counter()
        run(images[i : i + 1])
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.median(times))


def write_export_spec(folder: Path, spec: dict[str, Any]) -> Path:
    """``folder/export.json``, atomically."""
    write_json(folder / EXPORT_JSON, spec)
    return folder / EXPORT_JSON
