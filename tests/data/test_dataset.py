"""StoreDataset: random access, float tensors, augmentation keeps image and mask aligned."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from dsfed.data.dataset import StoreDataset
from dsfed.data.store import build_client_store
from dsfed.data.transforms import AugmentConfig
from dsfed.errors import HeldOutError
from dsfed.stages.prepare import store_path
from tests.conftest import small_params


@pytest.fixture
def store(project: Path) -> Path:
    params = small_params(project, image_size=64, mask_size=32)
    return build_client_store(params, "a", store_path(project, "a"), root=project, progress=False)


def test_items_and_loader(store: Path) -> None:
    ds = StoreDataset(store, "train")
    item = ds[0]
    assert item["image"].shape == (3, 64, 64) and item["image"].dtype == torch.float32
    assert 0.0 <= float(item["image"].min()) and float(item["image"].max()) <= 1.0
    assert item["mask"].shape == (2, 32, 32) and item["index"] == int(ds.indices[0]) and item["client"] == "a"
    batch = next(iter(DataLoader(ds, batch_size=4, shuffle=True, num_workers=2)))
    assert batch["image"].shape == (4, 3, 64, 64) and batch["mask"].shape == (4, 2, 32, 32)


def _disc_centroid_from_image(image: torch.Tensor) -> np.ndarray:
    """Centroid of the brightest pixels (the optic disc), in [0,1] image coordinates (row, col)."""
    grey = image.mean(0).numpy()
    rows, cols = np.nonzero(grey >= np.quantile(grey, 0.99))
    return np.array([rows.mean(), cols.mean()]) / grey.shape[0]


def _disc_centroid_from_mask(mask: torch.Tensor) -> np.ndarray:
    rows, cols = np.nonzero(mask[0].numpy() > 0.5)
    return np.array([rows.mean(), cols.mean()]) / mask.shape[-1]


def test_augmentation_keeps_image_and_mask_aligned(store: Path) -> None:
    plain = StoreDataset(store, "all")
    aug = StoreDataset(store, "all", augment=AugmentConfig(flip=0.5, affine=1.0, rotate_deg=30, scale=0.15, noise_std=0.0), seed=1)
    errors, moved = [], []
    for i in range(len(plain)):
        a = aug[i]
        if a["mask"][0].sum() < 4:
            continue
        errors.append(np.abs(_disc_centroid_from_image(a["image"]) - _disc_centroid_from_mask(a["mask"])).max())
        moved.append(np.abs(_disc_centroid_from_mask(a["mask"]) - _disc_centroid_from_mask(plain[i]["mask"])).max())
        assert set(torch.unique(a["mask"]).tolist()) <= {0.0, 1.0}
    assert np.median(errors) < 0.05  # the disc in the image sits where the mask says
    assert np.median(moved) > 0.02  # ...and the augmentation did move things


def test_holdout_train_split_refused(project: Path) -> None:
    params = small_params(project, holdout="b")
    path = build_client_store(params, "b", store_path(project, "b"), root=project, progress=False)
    with pytest.raises(HeldOutError):
        StoreDataset(path, "train")
    assert len(StoreDataset(path, "test")) == 12
