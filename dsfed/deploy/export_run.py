"""One ``dsfed export``: the graph, its description, the parity check on test images and the timings."""

from __future__ import annotations

import logging
import shutil
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch

from dsfed.config import Params
from dsfed.deploy.export import ONNX_FILE, OPSET, OnnxSegmenter, export_onnx, parity, time_ms, write_export_spec
from dsfed.deploy.models import ResolvedModel
from dsfed.io import atomic_path
from dsfed.models.segmenter import Segmenter

__all__ = ["RUNNER_FILE", "check_and_time", "check_images_of", "describe", "run_bundle_export", "run_export", "write_runner"]

RUNNER_FILE = "predict.py"

log = logging.getLogger(__name__)


def check_images_of(params: Params, artifacts: Path, n: int) -> tuple[torch.Tensor, torch.Tensor | None, str]:
    """Up to ``n`` test images (N, 3, S, S) and masks of the clients' stores under ``artifacts`` (each client's
    in turn), or ``n`` random images without masks when there is no store: (images, masks, where from)."""
    from dsfed.evaluation.suite import load_test_sets
    from dsfed.stages.prepare import store_path

    stores = {c: store_path(artifacts, c) for c in params.clients if store_path(artifacts, c).is_dir()}
    if not stores:
        log.warning("export: no client store under %s: the parity check runs on random images", artifacts)
        size = params.data.image_size
        return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(params.seed)), None, "random"
    tests = load_test_sets(stores)
    images = torch.cat([x for x, _ in tests.values()])[:n]
    masks = torch.cat([m for _, m in tests.values()])[:n]
    return images, masks, f"test ({', '.join(stores)})"


def write_runner(folder: Path) -> list[str]:
    """Copy the torch-free runner (:mod:`dsfed.deploy.runner`) into ``folder`` as ``predict.py``, with the
    ``requirements.txt`` it needs (this environment's versions as the floor); returns those requirements."""
    from dsfed.deploy import runner

    requirements = [f"{name}>={version(name)}" for name in ("onnxruntime", "numpy", "pillow")]
    with atomic_path(folder / RUNNER_FILE, overwrite=True) as tmp:
        shutil.copyfile(runner.__file__, tmp)
    with atomic_path(folder / "requirements.txt", overwrite=True) as tmp:
        tmp.write_text("\n".join(requirements) + "\n")
    return requirements


def describe(model: ResolvedModel, params: Params, fmt: str) -> dict[str, Any]:
    """What every export's ``export.json`` opens with: format, model, classes, sizes and resize rule."""
    data = params.data
    return {"format": fmt, "name": model.entry.key, "label": model.label, "classes": list(data.classes),
            "image_size": data.image_size, "mask_size": data.mask_size, "resize": data.resize}


def run_export(model: ResolvedModel, params: Params, artifacts: Path, folder: Path, n_check: int) -> dict[str, Any]:
    """Export ``model`` as ONNX into ``folder``; returns what ``export.json`` holds."""
    import onnxruntime

    logging.getLogger("onnx_ir").setLevel(logging.WARNING)   # its optimisation passes log every initializer at INFO
    data = params.data
    segmenter = model.load(list(data.classes), data.mask_size, torch.device("cpu"))
    folder.mkdir(parents=True, exist_ok=True)
    log.info("export: %s to %s", model.label, folder / ONNX_FILE)
    export_onnx(segmenter, folder / ONNX_FILE, data.image_size)
    spec: dict[str, Any] = {
        **describe(model, params, "onnx"),
        "input": {"name": "images", "shape": ["batch", 3, data.image_size, data.image_size], "dtype": "float32",
                  "values": "RGB / 255 (in [0, 1])"},
        "output": {"name": "logits", "shape": ["batch", len(data.classes), data.mask_size, data.mask_size],
                   "foreground": "logit > 0"},
        "opset": OPSET, "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
        "onnx_bytes": (folder / ONNX_FILE).stat().st_size,
        "runner": {"script": RUNNER_FILE, "requirements": write_runner(folder),
                   "usage": f"pip install -r requirements.txt && python {RUNNER_FILE} IMAGES... -o OUT"},
    }
    write_export_spec(folder, spec)
    spec.update(check_and_time(segmenter, OnnxSegmenter(folder), "onnxruntime", params, artifacts, n_check))
    write_export_spec(folder, spec)
    return spec


def check_and_time(segmenter: Segmenter, exported: Any, runtime: str, params: Params, artifacts: Path,
                   n_check: int) -> dict[str, Any]:
    """``{"parity", "timing_ms_per_image"}``: the export against PyTorch on up to ``n_check`` test images, and
    batch-1 latency of both (``runtime`` names the export's column) on up to 20 of them."""
    images, masks, where = check_images_of(params, artifacts, n_check)
    timing = images[: min(len(images), 20)]
    with torch.no_grad():
        times = {"pytorch": round(time_ms(segmenter, timing), 2), runtime: round(time_ms(exported, timing), 2)}
    return {"parity": {**parity(segmenter, exported, images, masks), "images_from": where},
            "timing_ms_per_image": {**times, "images": len(timing), "threads": torch.get_num_threads(), "batch": 1}}


def run_bundle_export(model: ResolvedModel, params: Params, artifacts: Path, folder: Path, n_check: int,
                      card: dict[str, Any] | None) -> dict[str, Any]:
    """Export ``model`` as a MONAI bundle into ``folder`` (:mod:`dsfed.deploy.bundle`), check the traced
    TorchScript against PyTorch and time both; returns what ``folder/export.json`` holds."""
    from dsfed.deploy.bundle import TS_FILE, write_bundle

    data = params.data
    segmenter = model.load(list(data.classes), data.mask_size, torch.device("cpu"))
    folder.mkdir(parents=True, exist_ok=True)
    log.info("export: %s as a MONAI bundle in %s", model.label, folder)
    spec = describe(model, params, "bundle")
    traced = write_bundle(segmenter, spec, folder, card)
    spec["torchscript_bytes"] = (folder / TS_FILE).stat().st_size
    spec.update(check_and_time(segmenter, traced, "torchscript", params, artifacts, n_check))
    spec["usage"] = ("python -m monai.bundle run --config_file configs/inference.json --meta_file configs/metadata.json "
                     "--dataset_dir IMAGES --output_dir OUT")   # from the bundle's folder (MONAI's bundle_root is ".")
    write_export_spec(folder, spec)
    return spec
