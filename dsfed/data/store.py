"""Zarr client stores: one per client, images (N,3,S,S) and masks (N,K,Sm,Sm), split indices, provenance."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zarr
from PIL import Image
from tqdm.auto import tqdm

import dsfed
from dsfed.config import Params
from dsfed.data.guarded_masks import GuardedMasks
from dsfed.data.mask_checks import check_foreground
from dsfed.data.partition import partition_indices
from dsfed.data.sample_arrays import read_sample_array, write_sample_array
from dsfed.data.sources import Sample, SourceItem, build_source
from dsfed.data.splits import SPLITS, assign_splits, stable_seed
from dsfed.errors import HeldOutError, SourceError, StoreError
from dsfed.io import atomic_path, sha256_file

__all__ = ["LABELS", "STORE_SCHEMA", "ClientStore", "GuardedMasks", "build_client_store", "resize_sample", "write_store"]

STORE_SCHEMA = 1
LABELS = ("full", "test_only", "none")
"""``clients.<c>.labels``: which of a store's masks training may read (see ``ClientConfig``)."""
log = logging.getLogger(__name__)
_ORACLE_WARNED: set[str] = set()


# --------------------------------------------------------------------------------------------------
# Resizing
# --------------------------------------------------------------------------------------------------


def _pad_square(array: np.ndarray) -> np.ndarray:
    """Zero-pad the last two axes of ``array`` to a centred square."""
    h, w = array.shape[-2:]
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    pad = [(0, 0)] * (array.ndim - 2) + [(top, side - h - top), (left, side - w - left)]
    return np.pad(array, pad)


def resize_sample(sample: Sample, image_size: int, mask_size: int, mode: str = "stretch") -> tuple[np.ndarray, np.ndarray]:
    """Resize one decoded sample to the store's resolution.

    Args:
        sample: image (H, W, 3) uint8 and mask (K, H, W) bool.
        image_size: S. mask_size: Sm.
        mode: 'stretch' (ignore aspect ratio, as most segmentation papers do) or 'pad' (centred
            zero padding to a square first, as SAM's preprocessing does).

    Returns:
        image (3, S, S) uint8 (antialiased), mask (K, Sm, Sm) uint8 in {0, 1} (area coverage >= 0.5).
    """
    image = sample.image.transpose(2, 0, 1)
    mask = sample.mask.astype(np.float32)
    if mode == "pad":
        image, mask = _pad_square(image), _pad_square(mask)
    rgb = Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0)))
    if rgb.size != (image_size, image_size):
        rgb = rgb.resize((image_size, image_size), Image.Resampling.LANCZOS if rgb.width > image_size else Image.Resampling.BICUBIC)
    out_mask = np.empty((mask.shape[0], mask_size, mask_size), dtype=np.uint8)
    for k, channel in enumerate(mask):
        area = Image.fromarray(channel, mode="F").resize((mask_size, mask_size), Image.Resampling.BOX)
        out_mask[k] = np.asarray(area) >= 0.5
    return np.asarray(rgb).transpose(2, 0, 1).copy(), out_mask


# --------------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------------


def _relative(path: Path, root: Path) -> str:
    base = root if root.is_dir() else root.parent
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path.resolve())


@dataclass(frozen=True)
class _Loaded:
    images: np.ndarray  # (N, 3, S, S) uint8
    masks: np.ndarray  # (N, K, Sm, Sm) uint8
    items: list[SourceItem]


def _load_all(source: Any, items: list[SourceItem], params: Params, client: str, progress: bool) -> _Loaded:
    data = params.data
    n, k = len(items), len(data.classes)
    images = np.empty((n, 3, data.image_size, data.image_size), dtype=np.uint8)
    masks = np.empty((n, k, data.mask_size, data.mask_size), dtype=np.uint8)
    for i, item in enumerate(tqdm(items, desc=f"prepare {client}", unit="img", disable=not progress, leave=False)):
        sample = source.load(item)
        if sample.mask.shape[0] != k:
            raise SourceError(f"{item.label or item.name}: source gave {sample.mask.shape[0]} mask channels, data.classes has {k}")
        images[i], masks[i] = resize_sample(sample, data.image_size, data.mask_size, data.resize)
    return _Loaded(images, masks, items)


def source_fingerprint(params: Params, client: str, file_hashes: dict[str, str]) -> str:
    """Hash of everything a store's content depends on: the client's spec, the shared settings, the inputs."""
    return hashlib.sha256(json.dumps(fingerprint_payload(params, client, file_hashes), sort_keys=True).encode()).hexdigest()


def fingerprint_payload(params: Params, client: str, file_hashes: dict[str, str]) -> dict[str, Any]:
    """What :func:`source_fingerprint` hashes.

    ``labels`` enters only when it is not "full": every store built before per-client labels existed
    (and the dvc.lock entries that hash them) keeps its fingerprint.
    """
    payload: dict[str, Any] = {
        "schema": STORE_SCHEMA,
        "seed": params.seed,
        "data": params.data.model_dump(mode="json"),
        "prepare": params.prepare.model_dump(mode="json"),
        "source": params.clients[client].source.model_dump(mode="json"),
        "holdout": params.data.holdout == client,
        "files": file_hashes,
    }
    labels = params.clients[client].labels
    if labels != "full":
        payload["labels"] = labels
    return payload


def build_client_store(
    params: Params,
    client: str,
    out: str | Path,
    root: str | Path = ".",
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Read ``clients.<client>.source`` and write its Zarr store at ``out``, atomically.

    An existing store built from the same inputs is left as it is. One built from different inputs is an
    error unless ``overwrite`` (the user's data is never replaced silently). A failure at any point
    leaves no store and no temporary files behind.

    Returns:
        The store path.
    """
    if client not in params.clients:
        raise StoreError(f"clients.{client}: no such client in params (have: {', '.join(params.clients)})")
    out, root = Path(out), Path(root)
    spec = params.clients[client].source
    field = f"clients.{client}.source"
    source = build_source(spec, params.data, root, field)
    items = source.items()
    if not items:
        raise SourceError(f"{field}: the source lists no samples")
    log.info("client %s: %d samples listed from %s source", client, len(items), spec.kind)

    loaded = _load_all(source, items, params, client, progress)
    if spec.partition is not None:
        keep = partition_indices(spec.partition, loaded.images, loaded.masks)
        loaded = _Loaded(loaded.images[keep], loaded.masks[keep], [loaded.items[i] for i in keep])
        log.info("client %s: partition %s part %d/%d keeps %d samples", client, spec.partition.method,
                 spec.partition.index, spec.partition.parts, len(keep))

    source_root = spec.path if spec.path.is_absolute() else root / spec.path
    input_files = dict.fromkeys(f for item in loaded.items for f in item.files)  # each file hashed once
    file_hashes = {_relative(f, source_root): sha256_file(f) for f in input_files}
    fingerprint = source_fingerprint(params, client, file_hashes)

    if out.exists():
        previous = _read_fingerprint(out)
        if previous == fingerprint:
            log.info("client %s: %s is up to date", client, out)
            return out
        if not overwrite:
            raise StoreError(
                f"clients.{client}: source changed since {out} was built "
                f"({_describe_change(out, file_hashes)}); rebuild with --overwrite"
            )

    labels = params.clients[client].labels
    if labels != "none":
        check_foreground(loaded.masks, list(params.data.classes), params.prepare.max_foreground, client)
    holdout = params.data.holdout == client
    splits = assign_splits(
        [item.split for item in loaded.items],
        params.prepare.split.val,
        params.prepare.split.test,
        seed=stable_seed(params.seed, client),
        holdout=holdout,
    )
    if not holdout and labels == "full" and not len(splits["val"]):
        raise StoreError(f"clients.{client}: prepare.split.val {params.prepare.split.val:g} of its {len(loaded.items)} samples gives "
                         "no validation sample, and model selection needs one (raise prepare.split.val, or add samples)")
    attrs = {
        "schema": STORE_SCHEMA,
        "dsfed_version": dsfed.__version__,
        "client": client,
        "role": "holdout" if holdout else "client",
        "classes": list(params.data.classes),
        "image_size": params.data.image_size,
        "mask_size": params.data.mask_size,
        "resize": params.data.resize,
        "source": spec.model_dump(mode="json"),
        "sample_names": [item.name for item in loaded.items],
        "sample_files": [item.label or item.name for item in loaded.items],
        "input_sha256": file_hashes,
        "fingerprint": fingerprint,
    }
    if labels != "full":
        # only then: a full store's zarr.json stays byte-identical to one built before labels existed
        # (the federation roster and dvc.lock hash it); ClientStore reads a missing attr as "full"
        attrs["labels"] = labels
    with atomic_path(out, overwrite=True) as tmp:
        _write(tmp, loaded, splits, attrs, params)
    log.info("client %s: wrote %s (%s)", client, out, ", ".join(f"{s} {len(splits[s])}" for s in SPLITS))
    return out


def _write(path: Path, loaded: _Loaded, splits: dict[str, np.ndarray], attrs: dict[str, Any], params: Params) -> None:
    comp = params.prepare.compression
    # labels: none writes no masks array at all (not an all-zero one, which a reader could take for real
    # empty masks): nothing to leak; ClientStore.masks gives a GuardedMasks whose shape comes from the attrs
    masks = None if attrs.get("labels") == "none" else loaded.masks
    write_store(path, loaded.images, masks, splits, attrs, comp.codec, comp.level)


def write_store(
    path: str | Path,
    images: np.ndarray,
    masks: np.ndarray | None,
    splits: dict[str, np.ndarray],
    attrs: dict[str, Any],
    codec: str = "zstd",
    level: int = 5,
) -> None:
    """Write a store in the client-store schema at ``path`` (the caller makes it atomic).

    Args:
        images: (N, 3, S, S) uint8. masks: (N, K, Sm, Sm) uint8 {0, 1}, or None to write no masks array
            (a client with ``labels: none``).
        splits: sample indices per split name (train, val, test; missing ones are empty).
        attrs: the group attributes (``schema`` is set here).
    """
    group = zarr.open_group(path, mode="w")
    for name, array in (("images", images), ("masks", masks)):
        if array is not None:
            write_sample_array(group, name, array, codec, level)
    split_group = group.create_group("splits")
    for name in SPLITS:
        split_group.create_array(name, data=np.asarray(splits.get(name, []), dtype=np.int64))
    group.attrs.update({**attrs, "schema": STORE_SCHEMA})


def _read_fingerprint(path: Path) -> str | None:
    try:
        return zarr.open_group(path, mode="r").attrs.get("fingerprint")
    except Exception:  # noqa: BLE001 - anything unreadable is "not the same store"
        return None


def _describe_change(path: Path, file_hashes: dict[str, str]) -> str:
    try:
        old: dict[str, str] = dict(zarr.open_group(path, mode="r").attrs.get("input_sha256", {}))
    except Exception:  # noqa: BLE001
        return "existing store is unreadable"
    changed = sum(1 for f in file_hashes.keys() & old.keys() if file_hashes[f] != old[f])
    added, removed = len(file_hashes.keys() - old.keys()), len(old.keys() - file_hashes.keys())
    if changed or added or removed:
        return f"{changed} input files changed, {added} added, {removed} removed"
    return "settings changed"


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------


class ClientStore:
    """Read access to a client store written by :func:`build_client_store`.

    Arrays open lazily, so a ``ClientStore`` pickles cheaply into DataLoader workers.

    A client whose ``labels`` are test_only or none (SAM-Fed's unlabelled clients) gives its masks as
    :class:`GuardedMasks`: a training row raises :class:`UnlabelledError`. ``oracle=True`` lifts the
    guard of a test_only store (every mask readable, with a warning): only a supervised upper bound may.

    Example::

        store = ClientStore("artifacts/clients/site_a/data.zarr")
        image, mask = store.images[store.split("train")[0]], store.masks[0]   # (3,S,S), (K,Sm,Sm) uint8
    """

    def __init__(self, path: str | Path, *, oracle: bool = False) -> None:
        self.path = Path(path)
        self.oracle = bool(oracle)
        if not (self.path / "zarr.json").is_file():
            raise StoreError(f"{self.path}: not a client store (run `dvc repro prepare` or `dsfed prepare`)")
        schema = self.attrs.get("schema")
        if schema != STORE_SCHEMA:
            raise StoreError(f"{self.path}: store schema {schema!r}, this dsfed reads schema {STORE_SCHEMA}")
        if self.labels not in LABELS:
            raise StoreError(f"{self.path}: store labels {self.labels!r}, expected one of {', '.join(LABELS)}")

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "oracle": self.oracle}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path = state["path"]
        self.oracle = bool(state.get("oracle", False))

    @cached_property
    def _group(self) -> zarr.Group:
        return zarr.open_group(self.path, mode="r")

    @cached_property
    def attrs(self) -> dict[str, Any]:
        return dict(self._group.attrs)

    @cached_property
    def images(self) -> zarr.Array | np.ndarray:
        """(N, 3, S, S) uint8: in memory when small (:func:`read_sample_array`), else read a sample at a time.
        Cached: opening an array reads its metadata (about 1 ms)."""
        return read_sample_array(self._group["images"])  # type: ignore[arg-type]

    @cached_property
    def masks(self) -> zarr.Array | np.ndarray | GuardedMasks:
        """(N, K, Sm, Sm) uint8 in {0, 1}: the array (in memory when small), or a :class:`GuardedMasks` when
        labels are not full (which reads the rows it lets through from disk, never the whole array)."""
        if self.labels == "full":
            return read_sample_array(self._group["masks"])  # type: ignore[arg-type]
        if self.oracle and self.labels == "test_only":
            key = str(self.path.resolve())
            if key not in _ORACLE_WARNED:
                _ORACLE_WARNED.add(key)
                log.warning("oracle access to client %s's masks: only the supervised upper bound may do this", self.client)
            return read_sample_array(self._group["masks"])  # type: ignore[arg-type]
        array: zarr.Array | None = self._group["masks"] if self.labels == "test_only" else None  # type: ignore[assignment]
        sm = int(self.attrs["mask_size"])
        shape = tuple(array.shape) if array is not None else (len(self), len(self.classes), sm, sm)
        splits = {name: np.asarray(self._group[f"splits/{name}"][:], dtype=np.int64) for name in SPLITS}
        return GuardedMasks(array, self.client, self.labels, shape, splits)

    @property
    def labels(self) -> Literal["full", "test_only", "none"]:
        """Which masks training may read: full, test_only, none (stores from before the attr: full)."""
        return self.attrs.get("labels", "full")  # type: ignore[no-any-return]

    @property
    def client(self) -> str:
        return str(self.attrs["client"])

    @property
    def classes(self) -> list[str]:
        return list(self.attrs["classes"])

    @property
    def is_holdout(self) -> bool:
        return self.attrs.get("role") == "holdout"

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def split(self, name: str) -> np.ndarray:
        """Sample indices of split ``name`` ('train', 'val', 'test', or 'all'), (n,) int64.

        Raises:
            HeldOutError: 'train' or 'val' of the held-out client, which must never train or select models.
        """
        if name not in (*SPLITS, "all"):
            raise StoreError(f"{self.path}: unknown split {name!r} (train, val, test, all)")
        if self.is_holdout and name != "test":
            raise HeldOutError(f"client {self.client} is held out (data.holdout): its data is for testing only, not {name!r}")
        if name == "all":
            return np.arange(len(self), dtype=np.int64)
        return np.asarray(self._group[f"splits/{name}"][:], dtype=np.int64)
