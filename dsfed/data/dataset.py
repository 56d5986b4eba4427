"""A torch Dataset with random access to one split of a client store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from dsfed.data.store import ClientStore
from dsfed.data.transforms import AugmentConfig, build_augment

__all__ = ["ArrayDataset", "StoreDataset"]


class StoreDataset(Dataset[dict[str, Any]]):
    """Samples of one split of a client store, read one chunk at a time.

    Each item is ``{"image": (3,S,S) float32 in [0,1], "mask": (K,Sm,Sm) float32 in {0,1},
    "index": int (row in the store), "client": str}``; with ``images_only`` there is no "mask" key and
    the store's masks are never read.

    Args:
        store: a :class:`ClientStore` or its path.
        split: 'train', 'val', 'test' or 'all' (train/val of the held-out client raise ``HeldOutError``).
        augment: augmentation settings, or None for none.
        seed: seeds the augmentation (per worker, MONAI's random state).
        images_only: items without masks (an unlabelled client's training images). Otherwise reading a
            mask training may not see (``labels: test_only`` train/val, ``labels: none``) raises
            ``UnlabelledError`` at that item. Pass ``ClientStore(path, oracle=True)`` to lift the guard.

    Example::

        loader = DataLoader(StoreDataset("artifacts/clients/site_a/data.zarr", "train",
                                         augment=AugmentConfig()), batch_size=4, shuffle=True)
    """

    def __init__(
        self,
        store: ClientStore | str | Path,
        split: str = "train",
        augment: AugmentConfig | None = None,
        seed: int = 0,
        images_only: bool = False,
    ) -> None:
        self.store = store if isinstance(store, ClientStore) else ClientStore(store)
        self.split = split
        self.images_only = images_only
        self.indices = self.store.split(split)
        self.augment = build_augment(augment, seed=seed) if augment is not None else None
        # build_augment's flip and affine act on an "image" and a "mask" key: images alone go through it with
        # a zero stand-in mask (K, Sm, Sm) from the attrs, dropped after (the same random draws as a
        # labelled item, so images_only sees exactly the images of a labelled read with the same seed)
        sm = int(self.store.attrs["mask_size"])
        self._stand_in = (len(self.store.classes), sm, sm)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = int(self.indices[i])
        image = torch.from_numpy(np.asarray(self.store.images[row], dtype=np.float32) / 255.0)
        if self.images_only:
            if self.augment is None:
                item: dict[str, Any] = {"image": image}
            else:
                item = _augmented({"image": image, "mask": torch.zeros(self._stand_in)}, self.augment)
                del item["mask"]
        else:
            mask = torch.from_numpy(np.asarray(self.store.masks[row], dtype=np.float32))
            item = _augmented({"image": image, "mask": mask}, self.augment)
        item["index"] = row
        item["client"] = self.store.client
        return item


class ArrayDataset(Dataset[dict[str, Any]]):
    """In-memory pairs with the same items and augmentation as :class:`StoreDataset` (e.g. a public corpus).

    Args:
        images: (N, 3, S, S) uint8. masks: (N, K, Sm, Sm) {0, 1}.
    """

    def __init__(self, images: np.ndarray, masks: np.ndarray, augment: AugmentConfig | None = None, seed: int = 0) -> None:
        if len(images) != len(masks):
            raise ValueError(f"{len(images)} images but {len(masks)} masks")
        self.images, self.masks = images, masks
        self.augment = build_augment(augment, seed=seed) if augment is not None else None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, Any]:
        image = torch.from_numpy(self.images[i].astype(np.float32) / 255.0)
        mask = torch.from_numpy(self.masks[i].astype(np.float32))
        item = _augmented({"image": image, "mask": mask}, self.augment)
        item["index"] = i
        return item


def _augmented(item: dict[str, Any], augment: Any) -> dict[str, Any]:
    if augment is None:
        return item
    item = augment(item)
    item = {k: torch.as_tensor(v).as_subclass(torch.Tensor) for k, v in item.items()}
    item["image"] = item["image"].clamp_(0.0, 1.0)
    return item
