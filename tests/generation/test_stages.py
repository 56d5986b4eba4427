"""The generation stages in-process at tiny size: backbone manifest, client ControlNet, server synthesis, audit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from dsfed.config import Params, parse_params
from dsfed.data.store import ClientStore, build_client_store
from dsfed.errors import DsfedError
from dsfed.federated.ledger import read_ledger
from dsfed.generation.backbone import EmbeddedBackbone
from dsfed.generation.backbones import prepare_backbone, read_manifest
from dsfed.generation.client import CONTROLNET_FILE
from dsfed.generation.controlnet import build_controlnet, save_controlnet
from dsfed.generation.server import augment_masks
from dsfed.generation.settings import MaskAugmentConfig
from dsfed.stages.backbone import backbone_dir, run_backbone_stage
from dsfed.stages.controlnet import generator_dir, run_controlnet_stage
from dsfed.stages.prepare import store_path
from dsfed.stages.quality import run_quality_stage
from dsfed.stages.synthesize import run_synthesize_stage, synthetic_path
from tests.conftest import ModuleTmp, phantom_client
from tests.generation.test_generation import TINY


def tiny_release(root: Path) -> tuple[Path, Path]:
    """A released-weights folder like data/pretrained/embedded, at tiny size (random weights)."""
    torch.manual_seed(0)
    backbone = EmbeddedBackbone(TINY)
    backbone.save(root / "release/backbone")
    save_controlnet(build_controlnet(backbone.unet), root / "release/controlnet.safetensors")
    return root / "release/backbone", root / "release/controlnet.safetensors"


def stage_params(root: Path, **sections: dict) -> Params:
    backbone, controlnet = tiny_release(root)
    raw = {
        "seed": 0,
        "data": {"image_size": 32, "mask_size": 16, "holdout": "h"},
        "prepare": {"split": {"val": 0.2, "test": 0.2}},
        "federated": {"augment": {"enabled": False}},
        "backbone": {"path": str(backbone), "controlnet": str(controlnet)},
        "controlnet": {"steps": 4, "batch_size": 4, "warmup_steps": 0},
        "synthesize": {"n": 12, "batch_size": 8, "sampler": {"steps": 2}},
        "quality": {"segmenter": {"epochs": 1, "input_size": 32}, "feature_size": 64, "grid_n": 3},
        "clients": {"a": phantom_client("site_a", n=15, view="roi"), "h": phantom_client("site_d", n=6, view="roi")},
        **sections,
    }
    return parse_params(raw, root=root)


@pytest.fixture(scope="module")
def chain(module_tmp: ModuleTmp) -> tuple[Path, Params]:
    """Stores for a training client ``a`` and a held-out client ``h``, then every generation stage."""
    root = module_tmp("chain")
    shutil.copy(Path(__file__).resolve().parents[2] / "data/phantom/sites.yaml", root / "sites.yaml")
    params = stage_params(root)
    art = root / "artifacts"
    for client in params.clients:
        build_client_store(params, client, store_path(art, client), root=root, progress=False)
    run_backbone_stage(params, art, root=root, progress=False)
    for client in params.clients:
        run_controlnet_stage(params, client, art, progress=False)
        run_synthesize_stage(params, client, art, progress=False)
        run_quality_stage(params, client, art, progress=False)
    return root, params


def test_manifest_records_the_backbone_and_generic_controlnet(chain: tuple[Path, Params]) -> None:
    root, params = chain
    manifest = read_manifest(backbone_dir(root / "artifacts"))
    assert manifest.kind == "embedded" and manifest.tasks is None
    assert Path(manifest.weights) == params.backbone.path and manifest.parameters["controlnet"] > 0
    assert len(manifest.sha256) == 3  # backbone.json, backbone.safetensors, controlnet.safetensors


def test_manifest_bytes_change_only_with_the_backbone(chain: tuple[Path, Params], tmp_path: Path) -> None:
    """No timings or code hash in it: rerunning the stage must not rerun every client's ControlNet."""
    root, params = chain
    run_backbone_stage(params, tmp_path, root=root, progress=False)
    assert (tmp_path / "backbone/manifest.json").read_bytes() == (root / "artifacts/backbone/manifest.json").read_bytes()


def test_client_uploads_only_controlnet_and_masks(chain: tuple[Path, Params]) -> None:
    root, _ = chain
    uploads = generator_dir(root / "artifacts", "a")
    rows = read_ledger(uploads / "ledger.csv")
    assert [(r["direction"], r["what"]) for r in rows] == [("up", "controlnet"), ("up", "masks")]
    assert rows[0]["bytes"] == (uploads / CONTROLNET_FILE).stat().st_size
    assert rows[1]["bytes"] == sum(p.stat().st_size for p in (uploads / "masks.zarr").rglob("*") if p.is_file())
    train = ClientStore(store_path(root / "artifacts", "a")).split("train")
    import zarr

    masks = zarr.open_group(uploads / "masks.zarr", mode="r")
    assert set(masks.keys()) == {"masks"} and masks["masks"].shape == (len(train), 2, 16, 16)  # no images
    summary = json.loads((uploads / "generator.json").read_text())
    assert summary["steps"] == 4 and summary["fixed_noise_loss"].keys() == {"train", "val"}
    assert all(v["generic"] > 0 and v["fine_tuned"] > 0 for v in summary["fixed_noise_loss"].values())
    curve = (uploads / "dvclive/plots/metrics/loss.tsv").read_text().splitlines()
    assert len(curve) == 1 + 4  # header + one row per step


def test_synthetic_store_schema_and_attrs(chain: tuple[Path, Params]) -> None:
    root, _ = chain
    store = ClientStore(synthetic_path(root / "artifacts", "a"))
    assert store.images.shape == (12, 3, 32, 32) and store.masks.shape == (12, 2, 16, 16)
    assert store.attrs["role"] == "synthetic" and store.attrs["client"] == "a"
    assert (store.attrs["sampler"], store.attrs["steps"], store.attrs["seed"]) == ("ddim", 2, 0)
    assert sorted(np.concatenate([store.split("train"), store.split("val")]).tolist()) == list(range(12))
    assert len(store.split("val")) == 2 and len(store.split("test")) == 0
    assert set(np.unique(store.masks[:])) <= {0, 1}
    assert store.images[:].std() > 5  # images, not a constant


def test_quality_report_and_grid(chain: tuple[Path, Params]) -> None:
    root, _ = chain
    folder = root / "artifacts/quality/a"
    quality = json.loads((folder / "quality.json").read_text())
    c = quality["controllability"]
    assert c["synthetic"]["n"] == 12 and 0 <= c["synthetic"]["dice"] <= 1 and c["real_test"]["n"] > 0
    assert c["synthetic_uploaded_masks"]["n"] + c["synthetic_augmented_masks"]["n"] == 12
    assert quality["realism_frechet"]["synthetic"] > 0 and "efficientnet_lite0" in quality["realism_frechet"]["features"]
    memo = quality["memorisation"]
    assert {"pixels", "features", "pixels_augmented_masks"} <= memo.keys()  # 12 synthetic > 7 uploaded masks
    assert memo["pixels_augmented_masks"]["n_synthetic"] == c["synthetic_augmented_masks"]["n"]
    assert 0 <= memo["pixels"]["nearest_is_source_share"] <= 1
    rows = read_ledger(folder / "audit_ledger.csv")
    assert [(r["direction"], r["what"]) for r in rows] == [("down", "synthetic_set"), ("up", "quality_report")]
    from PIL import Image

    grid = Image.open(folder / "grid.png")
    assert grid.size == (2 * (3 * 32 + 2 * 2), 2 * (5 * 32 + 4 * 2))  # 3 columns, 5 rows, 2 px gaps, x2


def test_held_out_client_gets_no_generator(chain: tuple[Path, Params]) -> None:
    root, _ = chain
    assert json.loads((generator_dir(root / "artifacts", "h") / "generator.json").read_text())["held_out"] is True
    assert not (generator_dir(root / "artifacts", "h") / CONTROLNET_FILE).exists()
    store = ClientStore(synthetic_path(root / "artifacts", "h"))
    assert len(store) == 0 and store.attrs["held_out"] is True
    assert json.loads((root / "artifacts/quality/h/quality.json").read_text())["held_out"] is True


def test_synthesis_reads_only_the_uploads_and_is_deterministic(chain: tuple[Path, Params], tmp_path: Path) -> None:
    """The server stage, run where the client's store does not exist at all, gives the same set."""
    root, params = chain
    server = tmp_path / "server"
    shutil.copytree(root / "artifacts/backbone", server / "backbone")
    shutil.copytree(root / "artifacts/generators/a", server / "generators/a")
    run_synthesize_stage(params, "a", server, progress=False)
    assert not (server / "clients").exists()
    ours, theirs = ClientStore(synthetic_path(server, "a")), ClientStore(synthetic_path(root / "artifacts", "a"))
    assert np.array_equal(ours.images[:], theirs.images[:]) and np.array_equal(ours.masks[:], theirs.masks[:])


def test_fine_tuning_lowers_the_fixed_noise_loss(tmp_path: Path) -> None:
    shutil.copy(Path(__file__).resolve().parents[2] / "data/phantom/sites.yaml", tmp_path / "sites.yaml")
    params = stage_params(tmp_path, controlnet={"steps": 40, "batch_size": 8, "lr": 2e-3, "warmup_steps": 0})
    art = tmp_path / "artifacts"
    build_client_store(params, "a", store_path(art, "a"), root=tmp_path, progress=False)
    run_backbone_stage(params, art, root=tmp_path, progress=False)
    loss = run_controlnet_stage(params, "a", art, progress=False)["fixed_noise_loss"]["train"]
    assert loss["fine_tuned"] < 0.9 * loss["generic"]


def test_augmented_masks_are_binary_new_and_deterministic() -> None:
    masks = np.zeros((3, 2, 32, 32), np.uint8)
    for i in range(3):
        masks[i, 0, 8 + i : 24, 6:20 + i] = 1
        masks[i, 1, 12:18, 10:14] = 1
    cfg = MaskAugmentConfig(flip=0.5, affine=1.0, elastic=1.0)
    out, source = augment_masks(masks, 9, cfg, seed=3)
    assert out.shape == (9, 2, 32, 32) and source.tolist() == [0, 1, 2] * 3
    assert np.array_equal(out[:3], masks) and set(np.unique(out)) <= {0, 1}
    assert all(not np.array_equal(out[i], masks[source[i]]) for i in range(3, 9))
    assert np.array_equal(augment_masks(masks, 9, cfg, seed=3)[0], out)
    assert np.array_equal(augment_masks(masks, 9, MaskAugmentConfig(enabled=False), seed=3)[0][3:], masks[source[3:]])


def test_bad_inputs_name_the_file(chain: tuple[Path, Params], tmp_path: Path) -> None:
    root, params = chain
    # a ControlNet upload that does not fit the backbone
    server = tmp_path / "server"
    shutil.copytree(root / "artifacts/backbone", server / "backbone")
    shutil.copytree(root / "artifacts/generators/a", server / "generators/a")
    other = EmbeddedBackbone(TINY.model_copy(update={"block_out_channels": (8, 16), "norm_num_groups": 8}))
    save_controlnet(build_controlnet(other.unet), server / "generators/a" / CONTROLNET_FILE)
    with pytest.raises(DsfedError, match=r"generators/a/controlnet\.safetensors"):
        run_synthesize_stage(params, "a", server, progress=False)
    # uploaded masks of other classes than data.classes
    single = params.model_copy(update={"data": params.data.model_copy(update={"classes": ["optic_disc"]})})
    with pytest.raises(DsfedError, match=r"masks\.zarr.*classes"):
        run_synthesize_stage(single, "a", root / "artifacts", progress=False)
    # no backbone stage yet
    empty = tmp_path / "empty"
    shutil.copytree(root / "artifacts/clients", empty / "clients")
    with pytest.raises(DsfedError, match=r"backbone/manifest\.json"):
        run_controlnet_stage(params, "a", empty, progress=False)
    # a backbone folder missing its weights
    broken = tmp_path / "broken"
    shutil.copytree(params.backbone.path, broken)
    (broken / "backbone.safetensors").unlink()
    bad = params.model_copy(update={"backbone": params.backbone.model_copy(update={"path": broken})})
    with pytest.raises(DsfedError, match=r"backbone\.safetensors"):
        prepare_backbone(bad, tmp_path / "art2", root=root, progress=False)
