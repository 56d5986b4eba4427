"""Per-client labels (``clients.<c>.labels``): the guard on an unlabelled client's masks, images-only items,
oracle access, ``labels: none`` stores, and fingerprints (unchanged for full, rebuilt on a change)."""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from dsfed.config import ConfigError, Params
from dsfed.data.dataset import StoreDataset
from dsfed.data.store import STORE_SCHEMA, ClientStore, GuardedMasks, build_client_store, fingerprint_payload
from dsfed.data.transforms import AugmentConfig
from dsfed.errors import DsfedError, HeldOutError, StoreError, UnlabelledError
from dsfed.stages.prepare import store_path
from tests.conftest import phantom_client, small_params

TRAINING_ROW = r"^client a has labels: test_only: its masks are for testing only, not for training \(row {row} is in its {split} split\)$"


def labelled_params(project: Path, labels: str | None) -> Params:
    """Client "a" (phantom site_a, 12 samples) with ``labels`` (None: the key left out, i.e. the default)."""
    client = phantom_client("site_a") | ({} if labels is None else {"labels": labels})
    return small_params(project, clients={"a": client, "b": phantom_client("site_b")})


def build(project: Path, labels: str | None, folder: str) -> ClientStore:
    params = labelled_params(project, labels)
    return ClientStore(build_client_store(params, "a", store_path(project / folder, "a"), root=project, progress=False))


@pytest.fixture
def stores(project: Path) -> dict[str, ClientStore]:
    """The same client built three times: labels full (default), test_only and none."""
    return {"full": build(project, None, "full"), "test_only": build(project, "test_only", "test_only"),
            "none": build(project, "none", "none")}


def splits_of(store: ClientStore) -> dict[str, list[int]]:
    return {s: store.split(s).tolist() for s in ("train", "val", "test")}


# --------------------------------------------------------------------------------------------------
# test_only
# --------------------------------------------------------------------------------------------------


def test_test_only_train_and_val_masks_are_unreadable(stores: dict[str, ClientStore]) -> None:
    store = stores["test_only"]
    assert issubclass(UnlabelledError, DsfedError) and not issubclass(UnlabelledError, HeldOutError)
    assert store.labels == "test_only" and store.attrs["labels"] == "test_only" and isinstance(store.masks, GuardedMasks)
    splits = splits_of(store)
    assert splits == splits_of(stores["full"]) and all(splits.values())
    train, val, test = splits["train"][0], splits["val"][0], splits["test"][0]
    masks = store.masks
    with pytest.raises(UnlabelledError, match=TRAINING_ROW.format(row=train, split="train")):
        masks[train]
    with pytest.raises(UnlabelledError, match=TRAINING_ROW.format(row=val, split="val")):
        masks[val]
    with pytest.raises(UnlabelledError, match=TRAINING_ROW.format(row=train, split="train")):
        masks[train - len(store)]  # negative row
    with pytest.raises(UnlabelledError, match=TRAINING_ROW.format(row=train, split="train")):
        masks[train, 0]  # a tuple: rows first
    first_bad = min(splits["train"] + splits["val"])
    for key in (slice(None), slice(first_bad, first_bad + 1), slice(None, None, -1)):
        with pytest.raises(UnlabelledError):
            masks[key]
    for rows in ([test, train], np.array([test, val]), np.array(splits["train"])):
        with pytest.raises(UnlabelledError, match=r"not for training \(row \d+ is in its (train|val) split\)"):
            masks[rows]
    everything = np.ones(len(store), dtype=bool)
    for read in (lambda: masks[everything], lambda: np.asarray(masks), lambda: list(masks),
                 lambda: masks.get_orthogonal_selection(([train], slice(None), slice(None), slice(None)))):
        with pytest.raises(UnlabelledError):
            read()
    with pytest.raises(IndexError):
        masks[len(store)]


def test_test_only_test_masks_and_all_images_are_readable(stores: dict[str, ClientStore]) -> None:
    full, store = stores["full"], stores["test_only"]
    masks = store.masks
    assert masks.shape == full.masks.shape == (12, 2, 24, 24) and masks.dtype == full.masks.dtype == np.uint8
    assert len(masks) == 12
    test = store.split("test")
    for row in test:
        np.testing.assert_array_equal(masks[int(row)], full.masks[int(row)])
    np.testing.assert_array_equal(masks[test], full.masks[:][test])
    np.testing.assert_array_equal(masks[test.tolist(), 0], full.masks[:][test, 0])
    np.testing.assert_array_equal(masks[np.isin(np.arange(12), test)], full.masks[:][np.sort(test)])
    np.testing.assert_array_equal(masks.get_orthogonal_selection((test.tolist(), slice(None), slice(None), slice(None))),
                                  full.masks[:][test])
    assert masks[np.array([], dtype=np.int64)].shape == (0, 2, 24, 24)
    assert full.masks[:][test].sum() > 0  # the comparison is not vacuous
    np.testing.assert_array_equal(store.images[:], full.images[:])  # every split's images


def test_images_only_dataset_trains_on_unlabelled_images_with_augmentation(stores: dict[str, ClientStore]) -> None:
    augment = AugmentConfig(flip=0.5, affine=1.0, rotate_deg=30, scale=0.15)
    for labels in ("test_only", "none"):  # none has no masks at all: images_only never touches them
        ds = StoreDataset(stores[labels], "train", augment=augment, seed=3, images_only=True)
        items = [ds[i] for i in range(len(ds))]
        assert len(items) == 7 and all("mask" not in item for item in items)
        assert all(item["image"].shape == (3, 48, 48) and item["image"].dtype == torch.float32 for item in items)
        assert all(0.0 <= float(item["image"].min()) and float(item["image"].max()) <= 1.0 for item in items)
        assert [item["index"] for item in items] == splits_of(stores["full"])["train"] and items[0]["client"] == "a"
        # the same random draws as a labelled read of the same rows with the same seed: the same images
        labelled = StoreDataset(stores["full"], "train", augment=augment, seed=3)
        for i, item in enumerate(items):
            torch.testing.assert_close(item["image"], labelled[i]["image"])
        plain = StoreDataset(stores["full"], "train")
        assert any(not torch.equal(item["image"], plain[i]["image"]) for i, item in enumerate(items))  # it augmented
    plain_items = StoreDataset(stores["test_only"], "val", images_only=True)[0]
    assert set(plain_items) == {"image", "index", "client"}


def test_labelled_dataset_over_unlabelled_rows_raises_at_the_first_item(stores: dict[str, ClientStore]) -> None:
    ds = StoreDataset(stores["test_only"], "train", augment=AugmentConfig())
    first = int(ds.indices[0])
    with pytest.raises(UnlabelledError, match=TRAINING_ROW.format(row=first, split="train")):
        next(iter(ds))
    test = StoreDataset(stores["test_only"], "test")
    assert all(torch.equal(test[i]["mask"], StoreDataset(stores["full"], "test")[i]["mask"]) for i in range(len(test)))


# --------------------------------------------------------------------------------------------------
# oracle
# --------------------------------------------------------------------------------------------------


def test_oracle_reads_every_mask_with_one_warning(stores: dict[str, ClientStore], caplog: pytest.LogCaptureFixture) -> None:
    path = stores["test_only"].path
    with caplog.at_level(logging.WARNING, logger="dsfed.data.store"):
        oracle = ClientStore(path, oracle=True)
        np.testing.assert_array_equal(oracle.masks[:], stores["full"].masks[:])
        oracle.masks[0]
        ClientStore(path, oracle=True).masks[0]  # another instance in the same process: no second warning
        revived = pickle.loads(pickle.dumps(oracle))  # a DataLoader worker's copy keeps the opt-in
        ds = StoreDataset(revived, "train")
        assert torch.equal(ds[0]["mask"], StoreDataset(stores["full"], "train")[0]["mask"])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["oracle access to client a's masks: only the supervised upper bound may do this"]
    assert revived.oracle is True and pickle.loads(pickle.dumps(ClientStore(path))).oracle is False
    plain = ClientStore.__new__(ClientStore)
    plain.__setstate__({"path": path})  # state pickled before the opt-in existed
    assert plain.oracle is False and isinstance(plain.masks, GuardedMasks)
    with pytest.raises(TypeError):
        ClientStore(path, True)  # type: ignore[misc]  # keyword-only


# --------------------------------------------------------------------------------------------------
# labels: none
# --------------------------------------------------------------------------------------------------


def test_labels_none_has_no_masks_anywhere(stores: dict[str, ClientStore]) -> None:
    store = stores["none"]
    group = zarr.open_group(store.path, mode="r")
    assert "masks" not in group and "images" in group and not (store.path / "masks").exists()
    assert store.labels == "none" and store.masks.shape == (12, 2, 24, 24) and len(store.masks) == 12
    np.testing.assert_array_equal(store.images[:], stores["full"].images[:])
    test = int(store.split("test")[0])
    for masks in (store.masks, ClientStore(store.path, oracle=True).masks):
        for key in (test, 0, slice(None), [test], np.array(store.split("test"))):
            with pytest.raises(UnlabelledError, match=r"^client a has labels: none: it has no masks \(row \d+ was asked for\)$"):
                masks[key]
    with pytest.raises(UnlabelledError):
        StoreDataset(store, "test")[0]


# --------------------------------------------------------------------------------------------------
# fingerprints and settings
# --------------------------------------------------------------------------------------------------


def test_full_store_fingerprint_and_attrs_are_as_before_labels_existed(project: Path, stores: dict[str, ClientStore]) -> None:
    full = stores["full"]
    params = labelled_params(project, None)
    assert params.clients["a"].labels == "full" and full.labels == "full" and "labels" not in full.attrs
    files = dict(full.attrs["input_sha256"])
    payload = fingerprint_payload(params, "a", files)
    assert "labels" not in payload
    before = {  # the payload exactly as it was hashed before per-client labels existed
        "schema": STORE_SCHEMA,
        "seed": params.seed,
        "data": params.data.model_dump(mode="json"),
        "prepare": params.prepare.model_dump(mode="json"),
        "source": params.clients["a"].source.model_dump(mode="json"),
        "holdout": False,
        "files": files,
    }
    assert full.attrs["fingerprint"] == hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()
    # an explicit labels: full is the same store
    assert fingerprint_payload(labelled_params(project, "full"), "a", files) == before
    assert fingerprint_payload(labelled_params(project, "test_only"), "a", files)["labels"] == "test_only"
    # older stores carry no labels attr: full, masks as the plain array
    assert not isinstance(full.masks, GuardedMasks)


def test_changing_labels_rebuilds_the_store(project: Path) -> None:
    out = store_path(project / "artifacts", "a")
    build_client_store(labelled_params(project, None), "a", out, root=project, progress=False)
    fingerprints = {"full": ClientStore(out).attrs["fingerprint"]}
    for labels in ("test_only", "none", "full"):
        params = labelled_params(project, labels)
        if labels != "full":
            with pytest.raises(StoreError, match=re.escape("(settings changed); rebuild with --overwrite")):
                build_client_store(params, "a", out, root=project, progress=False)
        build_client_store(params, "a", out, root=project, overwrite=True, progress=False)
        store = ClientStore(out)
        assert store.labels == labels
        fingerprints.setdefault(labels, store.attrs["fingerprint"])
        assert store.attrs["fingerprint"] == fingerprints[labels]
    assert len(set(fingerprints.values())) == 3
    assert not isinstance(ClientStore(out).masks, GuardedMasks)  # back to full: masks written again


def test_labels_setting_is_validated(project: Path) -> None:
    with pytest.raises(ConfigError, match="labels"):
        labelled_params(project, "partial")
