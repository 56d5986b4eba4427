"""Issue 17's check of ``dsfed predict``: the held-out client's raw images (rendered by its source at their own
resolution, as a hospital would have them) through ``predict``, scored against their own masks at that
resolution, beside ``evaluate``'s figure for the same model (scored at the store's mask size), and ``evaluate``'s
own logits taken through predict's resize to the image's size and back: when that equals predict's figure at the
mask size, predict fed the model what evaluate fed it, and any gap left is the resolution masks are scored at.

    python scripts/predict_check.py [MODEL ...] [--params params.yaml] [--artifacts artifacts] [--out DIR]

Writes the images, the predictions and ``predict_check.json`` to ``--out``; prints one row per model.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dsfed.config import load_params  # noqa: E402
from dsfed.data.sources import build_source  # noqa: E402
from dsfed.data.store import ClientStore  # noqa: E402
from dsfed.deploy.models import resolve_model  # noqa: E402
from dsfed.deploy.predict import masks_at_source_size, predict_images  # noqa: E402
from dsfed.evaluation.metrics import per_image_metrics  # noqa: E402
from dsfed.stages.prepare import store_path  # noqa: E402


def raw_test_images(params_path: Path, artifacts: Path, client: str, folder: Path) -> dict[str, np.ndarray]:
    """Write ``client``'s test images as PNGs at their source resolution; returns name -> mask (K, H, W) bool."""
    params = load_params(params_path)
    spec = params.clients[client].source
    source = build_source(spec, params.data, params_path.parent, f"clients.{client}.source")
    items = {item.name: item for item in source.items()}
    store = ClientStore(store_path(artifacts, client))
    names = store.attrs["sample_names"]
    folder.mkdir(parents=True, exist_ok=True)
    truth = {}
    for i in store.split("test"):
        sample = source.load(items[names[int(i)]])
        Image.fromarray(sample.image).save(folder / f"{names[int(i)]}.png")
        truth[names[int(i)]] = sample.mask.astype(bool)
    return truth


def native_dice(out: Path, truth: dict[str, np.ndarray], classes: list[str]) -> float:
    """Mean over images of the mean over classes (``evaluate``'s aggregate), at each image's own size."""
    per_image = []
    for name, mask in truth.items():
        pred = np.stack([np.asarray(Image.open(out / f"{name}_{c}.png")) > 127 for c in classes])
        logits = torch.from_numpy(np.where(pred, 1.0, -1.0))[None]
        dice = per_image_metrics(logits, torch.from_numpy(mask.astype(np.float32))[None])["dice"][0].numpy()
        per_image.append(float(np.nanmean(dice)))
    return float(np.mean(per_image))


def _to_mask_size(mask: np.ndarray, mask_size: int) -> np.ndarray:
    """(H, W) bool -> (Sm, Sm) bool as ``prepare`` brings ground truth there (area >= 0.5)."""
    area = Image.fromarray(mask.astype(np.float32), mode="F")
    return np.asarray(area.resize((mask_size, mask_size), Image.Resampling.BOX)) >= 0.5


def _store_dice(preds: np.ndarray, store: ClientStore) -> float:
    """(N, K, Sm, Sm) bool in test order against the store's test masks: ``evaluate``'s aggregate."""
    truth = torch.from_numpy(np.asarray(store.masks[np.sort(store.split("test"))], dtype=np.float32))
    logits = torch.from_numpy(np.where(preds, 1.0, -1.0))
    return float(np.nanmean(per_image_metrics(logits, truth)["dice"].numpy(), axis=1).mean())


def mask_size_dice(out: Path, store: ClientStore, classes: list[str], mask_size: int) -> float:
    """The same masks brought to the store's mask size as ``prepare`` brings ground truth there (area >= 0.5),
    scored against the store's masks: what ``evaluate`` measures, so any gap left is the predict path's own."""
    names = store.attrs["sample_names"]
    preds = [np.stack([_to_mask_size(np.asarray(Image.open(out / f"{names[int(i)]}_{c}.png")) > 127, mask_size)
                       for c in classes]) for i in np.sort(store.split("test"))]
    return _store_dice(np.stack(preds), store)


def evaluate_roundtrip_dice(model: torch.nn.Module, store: ClientStore, truth: dict[str, np.ndarray], resize: str,
                            mask_size: int) -> float:
    """``evaluate``'s own logits (the store's images through the model) taken to each image's own size as
    ``predict`` takes them, thresholded, and brought back to the mask size: equal to the predict-at-mask-size
    figure when predict feeds the model what evaluate feeds it, so what is left between the two is only the
    resolution the masks are scored at."""
    names = store.attrs["sample_names"]
    test = np.sort(store.split("test"))
    preds = []
    with torch.no_grad():
        for i in test:
            logits = model(torch.from_numpy(np.asarray(store.images[int(i)])[None]).float().div(255))[0]
            height, width = truth[names[int(i)]].shape[1:]
            masks = masks_at_source_size(logits, height, width, resize)
            preds.append(np.stack([_to_mask_size(channel, mask_size) for channel in masks]))
    return _store_dice(np.stack(preds), store)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", default=["dsfed-tinysam", "fedtinysam", "fedunet"])
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    params = load_params(args.params)
    client = params.data.holdout
    if client is None:
        raise SystemExit("data.holdout is not set: no held-out client to check on")
    out = args.out or Path(tempfile.mkdtemp(prefix="predict-check-"))
    truth = raw_test_images(args.params, args.artifacts, client, out / "images")
    sizes = sorted({m.shape[1:] for m in truth.values()})
    ev = json.loads((args.artifacts / "eval/metrics.json").read_text())
    classes = list(params.data.classes)
    rows = []
    for spec in args.models:
        chosen = resolve_model(spec, params, args.artifacts)
        model = chosen.load(classes, params.data.mask_size, torch.device("cpu"))
        pred = out / "pred" / chosen.entry.key
        summary = predict_images(model, sorted((out / "images").glob("*.png")), pred, classes, params.data.image_size,
                                 params.data.resize, progress=False)
        dice = native_dice(pred, truth, classes)
        small = mask_size_dice(pred, ClientStore(store_path(args.artifacts, client)), classes, params.data.mask_size)
        store = ClientStore(store_path(args.artifacts, client))
        roundtrip = evaluate_roundtrip_dice(model, store, truth, params.data.resize, params.data.mask_size)
        reference = ev["models"][chosen.entry.key]["holdout"]["dice"]
        rows.append({"model": spec, "key": chosen.entry.key, "images": len(summary.segmented), "predict_dice_native": round(dice, 4),
                     "predict_dice_at_mask_size": round(small, 4), "evaluate_dice_mask_size": reference,
                     "evaluate_logits_roundtrip": round(roundtrip, 4),
                     "difference_native": round(dice - reference, 4), "difference_at_mask_size": round(small - reference, 4)})
        print(f"{spec:<16} {len(summary.segmented)} images at {sizes}: predict Dice {dice:.4f} (native), {small:.4f} (at "
              f"{params.data.mask_size} px); evaluate {reference:.4f}; differences {dice - reference:+.4f}, {small - reference:+.4f}; "
              f"evaluate's logits through predict's resize and back {roundtrip:.4f}")
    (out / "predict_check.json").write_text(json.dumps({"client": client, "sizes": [list(s) for s in sizes], "rows": rows}, indent=2))
    print(f"written: {out / 'predict_check.json'}")


if __name__ == "__main__":
    main()
