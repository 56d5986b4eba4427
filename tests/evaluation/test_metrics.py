"""Per-image metrics against hand-computed values; evaluation over a dataset."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import Dataset

from dsfed.evaluation.metrics import evaluate, per_image_metrics, summarise
from dsfed.models import build_model


def _case() -> tuple[torch.Tensor, torch.Tensor]:
    logits = torch.full((2, 2, 8, 8), -5.0)
    masks = torch.zeros(2, 2, 8, 8)
    masks[0, 0, :4, :4] = 1  # 16 px of truth
    logits[0, 0, :4, :2] = 5  # 8 px predicted, all inside
    logits[1, 1, 0, 0] = 5  # 1 px predicted where the truth is empty
    return logits, masks


def test_dice_iou_hd95_by_hand() -> None:
    result = per_image_metrics(*_case(), hd95=True)
    np.testing.assert_allclose(result["dice"].numpy(), [[2 * 8 / 24, 1.0], [1.0, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(result["iou"].numpy(), [[0.5, 1.0], [1.0, 0.0]], rtol=1e-6)
    assert result["hd95"][0, 0] == 2.0 and math.isnan(float(result["hd95"][1, 1]))


def test_summary_is_nan_aware() -> None:
    result = {k: v.numpy() for k, v in per_image_metrics(*_case(), hd95=True).items()}
    summary = summarise(result, ["disc", "cup"])
    assert math.isclose(summary["dice_disc"], (2 / 3 + 1) / 2, rel_tol=1e-6) and summary["dice_cup"] == 0.5
    assert math.isclose(summary["dice"], (summary["dice_disc"] + summary["dice_cup"]) / 2)
    assert summary["hd95_disc"] == 2.0 and math.isnan(summary["hd95_cup"]) and summary["hd95"] == 2.0


class _Pairs(Dataset):
    def __init__(self, n: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.images = torch.rand(n, 3, 32, 32, generator=g)
        self.masks = (torch.rand(n, 1, 16, 16, generator=g) > 0.5).float()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[i], "mask": self.masks[i]}


def test_evaluate_matches_per_batch_computation() -> None:
    torch.manual_seed(0)
    model = build_model("unet", num_classes=1, output_size=16, input_size=32)
    data = _Pairs(5)
    out = evaluate(model, data, batch_size=2)
    assert out["dice"].shape == (5, 1)
    with torch.no_grad():
        direct = per_image_metrics(model(data.images), data.masks)["dice"].numpy()
    np.testing.assert_allclose(out["dice"], direct, rtol=1e-5)
