"""``dsfed export MODEL --format bundle``: the model as a MONAI bundle (TorchScript weights, MONAI's layout).

    <folder>/configs/metadata.json   MONAI's metadata: versions, classes, network_data_format, Dice per client
    <folder>/configs/inference.json  a config ``python -m monai.bundle run`` executes: the TorchScript network,
                                     and the pre- and post-processing of ``scripts/runner.py``
    <folder>/models/model.ts         ``torch.jit.trace`` of the model, saved with MONAI's metadata inside
                                     (``monai.data.save_net_with_metadata``), loadable with ``torch.jit.load``
    <folder>/scripts/runner.py       :mod:`dsfed.deploy.runner` (numpy and Pillow): decode, resize, undo, outline
    <folder>/docs/README.md          the model card

Run it from the bundle's folder (MONAI's convention: ``bundle_root`` is ``.``)::

    python -m monai.bundle run --config_file configs/inference.json --meta_file configs/metadata.json \\
        --dataset_dir /data/scans --output_dir /data/masks

The pre- and post-processing are the runner's functions rather than MONAI transforms: prepare's Lanczos or
bicubic resize (Pillow) and its 16-bit and palette rules have no exact MONAI transform, and a model fed
slightly different pixels than in training is a different model. The masks equal ``dsfed predict``'s.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any

import torch

from dsfed.deploy import runner
from dsfed.io import atomic_path, write_json
from dsfed.models.segmenter import Segmenter

__all__ = ["TS_FILE", "bundle_config", "bundle_metadata", "write_bundle"]

TS_FILE = "models/model.ts"


def bundle_metadata(spec: dict[str, Any], card: dict[str, Any] | None) -> dict[str, Any]:
    """``configs/metadata.json`` in MONAI's bundle metadata format, from the export's description."""
    import monai
    import numpy
    import PIL

    classes, size, mask = spec["classes"], spec["image_size"], spec["mask_size"]
    scored = (card or {}).get("evaluation") or {}
    dice = {f"{client}_dice": m.get("dice") for client, m in scored.get("clients", {}).items()}
    if scored:
        dice["source_mean_dice"] = scored["source_mean"].get("dice")
    return {
        "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json",
        "version": "0.1.0", "changelog": {"0.1.0": "exported by dsfed export --format bundle"},
        "monai_version": monai.__version__, "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": numpy.__version__, "optional_packages_version": {"pillow": PIL.__version__},
        "name": spec["label"], "task": "2D segmentation, one sigmoid channel per class (multi-label)",
        "description": f"{spec['label']}, trained by dsfed (federated: no image left a client). See docs/README.md.",
        "authors": "dsfed", "copyright": "see the training data's licences",
        "data_type": "png, jpg, bmp, tiff (8-bit or 16-bit; grey, palette and RGBA become RGB)",
        "image_classes": "RGB image, resized as dsfed's prepare resizes (data.resize: " + spec["resize"] + ")",
        "label_classes": ", ".join(f"channel {k}: {name}" for k, name in enumerate(classes)),
        "pred_classes": ", ".join(f"channel {k}: {name} (logit > 0)" for k, name in enumerate(classes)),
        "eval_metrics": dice, "intended_use": (card or {}).get("intended_use", "research"),
        "network_data_format": {
            "inputs": {"image": {"type": "image", "format": "magnitude", "modality": "RGB", "num_channels": 3,
                                 "spatial_shape": [size, size], "dtype": "float32", "value_range": [0, 1],
                                 "is_patch_data": False, "channel_def": {"0": "R", "1": "G", "2": "B"}}},
            "outputs": {"pred": {"type": "image", "format": "segmentation", "num_channels": len(classes),
                                 "spatial_shape": [mask, mask], "dtype": "float32", "value_range": ["-inf", "inf"],
                                 "is_patch_data": False, "channel_def": {str(k): c for k, c in enumerate(classes)}}},
        },
    }


def bundle_config(spec: dict[str, Any]) -> dict[str, Any]:
    """``configs/inference.json``: MONAI's config syntax (``$`` expressions, ``@`` references)."""
    keep = {k: spec[k] for k in ("name", "label", "classes", "image_size", "mask_size", "resize")}
    return {
        "imports": ["$import torch", "$import pathlib"],
        "bundle_root": ".",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "dataset_dir": "images",
        "output_dir": "$@bundle_root + '/eval'",
        "mask_format": "per-class",
        "batch_size": 8,
        "spec": keep,
        "network_def": f"$torch.jit.load(@bundle_root + '/{TS_FILE}', map_location=@device)",
        "network": "$@network_def.eval()",
        "runner": "$__import__('scripts.runner', fromlist=['segment'])",
        "logits_of": "$lambda x: @network(torch.from_numpy(x).to(@device)).detach().float().cpu().numpy()",
        "run": ["$@runner.segment_paths([pathlib.Path(@dataset_dir)], pathlib.Path(@output_dir), @spec, "
                "@logits_of, @mask_format, @batch_size)"],
    }


def trace(model: Segmenter, image_size: int) -> torch.jit.ScriptModule:
    """``torch.jit.trace`` of ``model`` (eval, CPU) at batch 2; the graph takes any batch size.

    TorchScript, though PyTorch deprecates ``torch.jit`` for ``torch.export``, because a MONAI bundle's network
    is ``models/model.ts`` loaded with ``torch.jit.load`` (MONAI's bundle tools and Model Zoo); the deprecation
    notice is silenced here, where it is a choice, not a surprise."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit")
        return torch.jit.trace(model.eval().cpu(), (torch.rand(2, 3, image_size, image_size),))


def write_bundle(model: Segmenter, spec: dict[str, Any], folder: Path, card: dict[str, Any] | None) -> torch.jit.ScriptModule:
    """Write the bundle into ``folder`` (each file atomically); returns the traced module."""
    from monai.data import save_net_with_metadata

    metadata = bundle_metadata(spec, card)
    traced = trace(model, spec["image_size"])
    (folder / "models").mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / TS_FILE, overwrite=True) as tmp, open(tmp, "wb") as fh, warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit")
        save_net_with_metadata(traced, fh, meta_values=metadata)
    write_json(folder / "configs" / "metadata.json", metadata)
    write_json(folder / "configs" / "inference.json", bundle_config(spec))
    scripts = folder / "scripts"
    scripts.mkdir(parents=True, exist_ok=True)
    with atomic_path(scripts / "runner.py", overwrite=True) as tmp:
        shutil.copyfile(runner.__file__, tmp)
    (scripts / "__init__.py").touch()
    return traced

