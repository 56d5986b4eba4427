"""Client stores: schema, provenance, atomic writes, refusal to overwrite a store built from other inputs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import zarr

from dsfed.data.sources import build_source
from dsfed.data.sources.base import Sample
from dsfed.data.store import ClientStore, build_client_store, resize_sample
from dsfed.errors import HeldOutError, SourceError, StoreError
from dsfed.stages.prepare import store_path
from tests.conftest import phantom_client, small_params


def test_store_schema_and_contents(project: Path) -> None:
    params = small_params(project)
    out = build_client_store(params, "a", store_path(project / "artifacts", "a"), root=project, progress=False)
    store = ClientStore(out)
    assert store.images.shape == (12, 3, 48, 48) and store.images.dtype == np.uint8
    assert store.masks.shape == (12, 2, 24, 24) and set(np.unique(store.masks[:])) <= {0, 1}
    on_disk = zarr.open_group(out, mode="r")
    assert on_disk["images"].chunks == (1, 3, 48, 48) and on_disk["masks"].chunks == (1, 2, 24, 24)
    assert on_disk["images"].shards == (12, 3, 48, 48) and on_disk["masks"].shards == (12, 2, 24, 24)
    assert isinstance(store.images, np.ndarray) and np.array_equal(store.images, on_disk["images"][:])   # small: in memory
    splits = {s: store.split(s).tolist() for s in ("train", "val", "test")}
    assert sorted(sum(splits.values(), [])) == list(range(12))
    assert [len(splits[s]) for s in ("train", "val", "test")] == [7, 2, 3]
    attrs = store.attrs
    assert attrs["client"] == "a" and attrs["role"] == "client" and attrs["classes"] == ["optic_disc", "optic_cup"]
    assert attrs["sample_names"][0] == "site_a_0000" and len(attrs["sample_files"]) == 12
    assert attrs["input_sha256"] == {"sites.yaml": hashlib.sha256((project / "sites.yaml").read_bytes()).hexdigest()}
    # the stored pixels are the source's samples, resized
    source = build_source(params.clients["a"].source, params.data, project, "clients.a.source")
    items = source.items()
    image, mask = resize_sample(source.load(items[5]), 48, 24)
    assert np.array_equal(store.images[5], image) and np.array_equal(store.masks[5], mask)
    # optic cup inside optic disc survives resizing
    masks = store.masks[:]
    assert np.all(masks[:, 1] <= masks[:, 0]) and masks[:, 1].sum() > 0


def test_same_inputs_leave_store_untouched_and_changed_inputs_are_refused(project: Path) -> None:
    params = small_params(project)
    out = store_path(project / "artifacts", "a")
    build_client_store(params, "a", out, root=project, progress=False)
    stamp = (out / "images" / "zarr.json").stat().st_mtime_ns
    build_client_store(params, "a", out, root=project, progress=False)  # up to date: nothing rewritten
    assert (out / "images" / "zarr.json").stat().st_mtime_ns == stamp

    changed = small_params(project, clients={"a": phantom_client("site_a", n=13), "b": phantom_client("site_b")})
    with pytest.raises(StoreError, match=r"^clients.a: source changed since .*data.zarr was built \(settings changed\); rebuild with --overwrite$"):
        build_client_store(changed, "a", out, root=project, progress=False)
    assert len(ClientStore(out)) == 12  # the user's store is intact
    (project / "sites.yaml").write_text((project / "sites.yaml").read_text() + "\n# edited\n")
    with pytest.raises(StoreError, match=r"1 input files changed, 0 added, 0 removed"):
        build_client_store(params, "a", out, root=project, progress=False)
    build_client_store(changed, "a", out, root=project, overwrite=True, progress=False)
    assert len(ClientStore(out)) == 13


def test_failure_midway_leaves_nothing(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    params = small_params(project)
    import dsfed.data.store as store_module

    calls = {"n": 0}
    real = store_module.resize_sample

    def flaky(sample: Sample, *args: object) -> tuple[np.ndarray, np.ndarray]:
        calls["n"] += 1
        if calls["n"] == 7:
            raise SourceError("x.png: cannot read image (truncated)")
        return real(sample, *args)

    monkeypatch.setattr(store_module, "resize_sample", flaky)
    out = store_path(project / "artifacts", "a")
    with pytest.raises(SourceError):
        build_client_store(params, "a", out, root=project, progress=False)
    assert not out.exists()
    assert not out.parent.exists() or list(out.parent.iterdir()) == []

    # a failure while writing (after the sample loop) also leaves no store and no temp dir
    monkeypatch.setattr(store_module, "resize_sample", real)
    monkeypatch.setattr(store_module, "_write", lambda path, *a: (Path(path).mkdir(), (_ for _ in ()).throw(OSError("disk full"))))
    with pytest.raises(OSError, match="disk full"):
        build_client_store(params, "a", out, root=project, progress=False)
    assert not out.exists() and list(out.parent.iterdir()) == []


def test_holdout_store_is_test_only(project: Path) -> None:
    params = small_params(project, holdout="b")
    store = ClientStore(build_client_store(params, "b", store_path(project, "b"), root=project, progress=False))
    assert store.is_holdout and store.split("test").tolist() == list(range(12))
    for split in ("train", "val", "all"):
        with pytest.raises(HeldOutError, match=r"client b is held out \(data.holdout\)"):
            store.split(split)


def test_not_a_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="not a client store"):
        ClientStore(tmp_path)
    zarr.open_group(tmp_path / "x.zarr", mode="w").attrs["schema"] = 99
    with pytest.raises(StoreError, match="store schema 99"):
        ClientStore(tmp_path / "x.zarr")


def test_partitioned_clients_share_one_dataset(project: Path) -> None:
    part = {"method": "attribute", "parts": 2, "attribute": "brightness"}
    clients = {f"p{i}": phantom_client("site_a", n=10, partition={**part, "index": i}) for i in range(2)}
    params = small_params(project, clients=clients)
    stores = [ClientStore(build_client_store(params, c, store_path(project, c), root=project, progress=False)) for c in clients]
    names = [set(s.attrs["sample_names"]) for s in stores]
    assert len(names[0]) == len(names[1]) == 5 and not names[0] & names[1]
    assert stores[0].images[:].mean() < stores[1].images[:].mean()  # darker half, brighter half


@pytest.mark.parametrize(("mode", "expected_top_rows_black"), [("stretch", False), ("pad", True)])
def test_resize_modes(mode: str, expected_top_rows_black: bool) -> None:
    image = np.full((20, 40, 3), 200, dtype=np.uint8)
    mask = np.ones((1, 20, 40), dtype=bool)
    out_image, out_mask = resize_sample(Sample(image, mask), 16, 8, mode)
    assert out_image.shape == (3, 16, 16) and out_mask.shape == (1, 8, 8)
    assert (out_image[:, 0].max() == 0) == expected_top_rows_black
    assert out_mask.sum() == (32 if mode == "pad" else 64)


def _inverted_lesions(base: Path, n: int = 8) -> None:
    """``n`` image/mask pairs whose masks have the lesion at 0 and the background at 255 (inverted)."""
    from PIL import Image

    for i in range(n):
        (base / "images").mkdir(parents=True, exist_ok=True)
        (base / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(base / f"images/c{i}.png")
        mask = np.full((32, 32), 255, np.uint8)
        mask[10:16, 10:16] = 0
        Image.fromarray(mask).save(base / f"masks/c{i}.png")


def test_inverted_masks_are_refused_naming_the_override(project: Path) -> None:
    """A layout whose foreground value is the other way round imported 96 % foreground without a word."""
    from dsfed.config import parse_params

    _inverted_lesions(project / "lesions")
    raw = {"data": {"classes": ["lesion"], "image_size": 32, "mask_size": 16},
           "clients": {"h1": {"source": {"kind": "folders", "path": "lesions", "pairing": {"mask_suffix": ""},
                                         "mask_mapping": {"threshold": 128}}}}}
    out = store_path(project / "artifacts", "h1")
    with pytest.raises(SourceError, match=r"^clients\.h1: the masks are 96\.5 % lesion \(over prepare\.max_foreground 0\.9\): an inverted "
                                          r"mask .* raise prepare\.max_foreground to accept them$"):
        build_client_store(parse_params(raw, root=project), "h1", out, root=project, progress=False)
    assert not out.exists() and not list(out.parent.glob(".*"))   # nothing half-written
    raw["prepare"] = {"max_foreground": 1.0}
    store = ClientStore(build_client_store(parse_params(raw, root=project), "h1", out, root=project, progress=False))
    assert store.masks[:].mean() > 0.9


def test_a_training_client_without_a_validation_sample_is_refused(project: Path) -> None:
    """Otherwise every federated method keeps its untrained round 0 and ships it."""
    part = {"method": "attribute", "parts": 6, "attribute": "brightness"}
    clients = {f"p{i}": phantom_client("site_a", n=12, partition={**part, "index": i}) for i in range(6)}
    params = small_params(project, clients=clients)   # 2 samples each: 0.2 of 2 rounds to no validation sample
    out = store_path(project / "artifacts", "p0")
    with pytest.raises(StoreError, match=r"^clients\.p0: prepare\.split\.val 0\.2 of its 2 samples gives no validation sample"):
        build_client_store(params, "p0", out, root=project, progress=False)
    assert not out.exists()
