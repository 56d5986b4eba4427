"""Public corpus rendering, the disc-placement check, and a tiny end-to-end pre-training run."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
import torch

from dsfed.data.phantom import load_site_style
from dsfed.errors import DsfedError
from dsfed.generation import DiffusionTrainSpec, EmbeddedBackbone, SamplerSpec, load_controlnet
from dsfed.generation.backbone import read_metadata
from dsfed.generation.corpus import DEFAULT_TABLE, TASK_PROMPTS, public_corpus, render_one
from dsfed.generation.notes import controlnet_tasks
from dsfed.generation.pretrain import disc_offsets, mask_contrast, pretrain
from tests.generation.test_generation import TINY


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def test_public_corpus_shapes_and_determinism() -> None:
    images, masks = public_corpus(4, size=32, seed=3, progress=False)
    assert images.shape == (4, 3, 32, 32) and images.dtype == np.uint8
    assert masks.shape == (4, 2, 32, 32) and masks.dtype == np.uint8
    assert set(np.unique(masks)) <= {0, 1}
    assert masks[:, 0].mean() > 0.05  # ROI view: the disc is a sizeable part of every crop
    assert (masks[:, 1] <= masks[:, 0]).mean() > 0.99  # cup inside disc
    again, _ = public_corpus(2, size=32, seed=3, progress=False)
    assert np.array_equal(again, images[:2])  # sample i does not depend on n
    other, _ = public_corpus(2, size=32, seed=4, progress=False)
    assert not np.array_equal(other, images[:2])


def test_public_corpus_uses_the_public_site() -> None:
    assert inspect.signature(public_corpus).parameters["site"].default == "public"
    images, masks = public_corpus(2, size=32, seed=0, progress=False)
    style = load_site_style(DEFAULT_TABLE, "fundus", "public")
    image, mask = render_one(1, 32, 0, "public", style, "roi", 3.0, 0.08, 2, ("optic_disc", "optic_cup"))
    assert np.array_equal(image, images[1]) and np.array_equal(mask, masks[1])
    site_a, _ = public_corpus(2, size=32, seed=0, site="site_a", progress=False)
    assert not np.array_equal(site_a, images)
    with pytest.raises(DsfedError, match="nowhere"):
        public_corpus(1, site="nowhere", progress=False)


def test_public_corpus_workers_match_serial() -> None:
    serial = public_corpus(3, size=16, progress=False)
    parallel = public_corpus(3, size=16, workers=2, progress=False)
    assert all(np.array_equal(a, b) for a, b in zip(serial, parallel, strict=True))


def test_disc_offsets_by_hand() -> None:
    masks = np.zeros((2, 2, 16, 16), np.uint8)
    masks[:, 0, 2:6, 2:6] = 1  # disc centred at (3.5, 3.5)
    images = np.zeros((2, 3, 16, 16), np.uint8)
    images[0, :, 2:6, 2:6] = 255  # bright where the disc is
    images[1, :, 10:14, 2:6] = 255  # bright 8 px lower
    off = disc_offsets(images, masks, bright_fraction=16 / 256)
    assert off[0] == pytest.approx(0.0) and off[1] == pytest.approx(8.0)


def test_mask_contrast_by_hand() -> None:
    masks = np.zeros((3, 1, 8, 8), np.uint8)
    masks[:2, 0, :4] = 1
    images = np.full((3, 3, 8, 8), 100, np.uint8)
    images[0, :, :4] = 40  # a dark structure where the mask is
    contrast = mask_contrast(images, masks)
    assert contrast[0] == pytest.approx(60.0) and contrast[1] == 0.0 and np.isnan(contrast[2])  # empty mask


def test_tiny_pretrain_writes_loadable_weights(tmp_path) -> None:
    steps = DiffusionTrainSpec(steps=2, batch_size=4, amp=False)
    summary = pretrain(tmp_path / "w", corpus_n=6, backbone_spec=TINY, backbone_train=steps, controlnet_train=steps,
                       sampler=SamplerSpec(steps=2), grid_n=2, eval_n=3, progress=False)
    out = tmp_path / "w"
    assert {p.name for p in out.iterdir()} == {"backbone", "controlnet.safetensors", "losses.json", "grid.png", "pretrain.json"}
    backbone = EmbeddedBackbone.load(out / "backbone")
    load_controlnet(backbone.unet, out / "controlnet.safetensors")
    written = json.loads((out / "pretrain.json").read_text())
    assert written["params"]["corpus_n"] == 6 and written["params"]["tasks"] == ["fundus", "skin", "polyp"]
    assert written["params"]["backbone_spec"]["sample_size"] == 16
    assert backbone.spec.prompts == tuple(TASK_PROMPTS.values()) and backbone.prompt.shape[0] == 4
    assert written["code_hash"] == summary["code_hash"] == read_metadata(out / "controlnet.safetensors")["code_hash"]
    assert controlnet_tasks(out / "controlnet.safetensors") == {"fundus": ["optic_disc", "optic_cup"], "skin": ["lesion"], "polyp": ["polyp"]}
    assert set(written["checks"]) == {"fundus", "skin", "polyp"}
    assert {"contrast_generated", "contrast_real", "contrast_shuffled_masks", "disc_generated_median_px"} <= set(written["checks"]["fundus"])
    losses = json.loads((out / "losses.json").read_text())
    assert len(losses["backbone"]) == 2 and len(losses["controlnet"]) == 2
    with pytest.raises(FileExistsError):
        pretrain(out, corpus_n=2, backbone_spec=TINY, backbone_train=steps, controlnet_train=steps, progress=False)
    assert not list(tmp_path.glob(".w.tmp-*"))
    # warm start: one task; its prompt row starts from the same text's row, the UNet from the released one
    zero = DiffusionTrainSpec(steps=1, batch_size=2, amp=False, lr=1e-12, ema_decay=None, warmup_steps=0)
    pretrain(tmp_path / "w2", corpus_n=2, backbone_spec=TINY, backbone_train=zero, controlnet_train=zero, tasks=("skin",), init=out,
             sampler=SamplerSpec(steps=1), grid_n=1, eval_n=1, progress=False)
    warm = EmbeddedBackbone.load(tmp_path / "w2" / "backbone")
    assert warm.spec.prompts == (TASK_PROMPTS["skin"],)
    assert torch.allclose(warm.prompt[1], backbone.prompt[2], atol=1e-3)
    name, value = next(iter(backbone.unet.state_dict().items()))
    assert torch.allclose(warm.unet.state_dict()[name], value, atol=1e-3)
    with pytest.raises(DsfedError, match="tasks"):
        pretrain(tmp_path / "w3", corpus_n=2, backbone_spec=TINY, tasks=("xray",), progress=False)
