"""Backbone, condition rendering, ControlNet, training and sampling at tiny sizes (16 px, a few steps)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from dsfed.errors import DsfedError
from dsfed.generation import (
    BackboneSpec,
    DiffusionTrainSpec,
    EmbeddedBackbone,
    SamplerSpec,
    build_controlnet,
    load_controlnet,
    render_condition,
    save_controlnet,
    train_backbone,
    train_controlnet,
)
from dsfed.generation.backbone import BACKBONE_CONFIG, BACKBONE_WEIGHTS, read_metadata
from dsfed.generation.sample import sample

TINY = BackboneSpec(
    sample_size=16,
    block_out_channels=(16, 32),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    cross_attention_dim=8,
    attention_head_dim=8,
    norm_num_groups=4,
)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)  # another process may hold the second core (see DESIGN: Threads)


def tiny_backbone(seed: int = 0) -> EmbeddedBackbone:
    torch.manual_seed(seed)
    return EmbeddedBackbone(TINY)


def disc_masks(n: int, size: int = 16, seed: int = 0) -> np.ndarray:
    """(N, 2, S, S) uint8: a disc (radius 4) at a random place, a cup (radius 2) at its centre."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    out = np.zeros((n, 2, size, size), np.uint8)
    for i in range(n):
        cy, cx = rng.integers(4, size - 4, 2)
        r2 = (yy - cy) ** 2 + (xx - cx) ** 2
        out[i, 0], out[i, 1] = r2 <= 16, r2 <= 4
    return out


def disc_images(masks: np.ndarray) -> np.ndarray:
    """Images that follow the masks exactly: dark red background, bright disc, white cup."""
    n, _, s, _ = masks.shape
    img = np.empty((n, 3, s, s), np.uint8)
    img[:] = np.array([90, 20, 10], np.uint8)[None, :, None, None]
    disc, cup = masks[:, 0:1].astype(bool), masks[:, 1:2].astype(bool)
    img = np.where(disc, np.array([230, 200, 120], np.uint8)[None, :, None, None], img)
    return np.where(cup, np.uint8(255), img).astype(np.uint8)


# ------------------------------------------------------------------------------------------ settings


def test_specs_refuse_extra_fields_and_inconsistent_blocks() -> None:
    with pytest.raises(ValidationError, match="down_block_types"):
        BackboneSpec(block_out_channels=(32, 64), down_block_types=("DownBlock2D",) * 3)
    with pytest.raises(ValidationError, match="norm_num_groups"):
        BackboneSpec(block_out_channels=(30, 64, 128))
    with pytest.raises(ValidationError):
        DiffusionTrainSpec(stpes=3)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        SamplerSpec(sampler="euler")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ backbone


def test_backbone_shapes() -> None:
    b = tiny_backbone()
    assert (b.sample_size, b.in_channels, b.condition_size) == (16, 3, 16)
    prompt = b.encode_prompt(5)
    assert prompt.shape == (5, 1, 8)
    x = torch.randn(5, 3, 16, 16)
    out = b.unet(x, torch.full((5,), 10), encoder_hidden_states=prompt).sample
    assert out.shape == (5, 3, 16, 16)
    assert b.encode_images(torch.zeros(2, 3, 32, 32)).shape == (2, 3, 16, 16)
    assert b.scheduler_config["prediction_type"] == "v_prediction"
    assert b.scheduler_config["beta_schedule"] == "squaredcos_cap_v2"


def test_default_backbone_is_small() -> None:
    b = EmbeddedBackbone(BackboneSpec())
    c = build_controlnet(b.unet)
    assert 2e6 < sum(p.numel() for p in b.parameters()) < 6e6
    assert sum(p.numel() for p in c.parameters()) < sum(p.numel() for p in b.parameters())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_backbone_save_load_round_trip(tmp_path, dtype) -> None:
    b = tiny_backbone()
    b.save(tmp_path / "bb", {"command": "test", "params": {"a": 1}, "dsfed_version": "x", "code_hash": "abc"}, dtype=dtype)
    loaded = EmbeddedBackbone.load(tmp_path / "bb")
    assert loaded.spec == TINY
    assert loaded.scheduler_config == b.scheduler_config
    own, back = b.state_dict(), loaded.state_dict()
    assert own.keys() == back.keys()
    for k in own:
        assert back[k].dtype == torch.float32
        assert torch.equal(back[k], own[k].to(dtype).float()), k
    config = json.loads((tmp_path / "bb" / BACKBONE_CONFIG).read_text())
    meta = read_metadata(tmp_path / "bb" / BACKBONE_WEIGHTS)
    assert config["params"] == {"a": 1} and json.loads(meta["params"]) == {"a": 1}
    assert meta["code_hash"] == "abc" and meta["command"] == "test"
    assert loaded.metadata["code_hash"] == "abc"


def test_default_metadata_records_version_and_code_hash(tmp_path) -> None:
    tiny_backbone().save(tmp_path)
    meta = read_metadata(tmp_path / BACKBONE_WEIGHTS)
    assert meta["dsfed_version"] and len(meta["code_hash"]) == 16


@pytest.mark.parametrize("missing", [BACKBONE_WEIGHTS, BACKBONE_CONFIG])
def test_load_names_the_missing_component(tmp_path, missing) -> None:
    tiny_backbone().save(tmp_path)
    (tmp_path / missing).unlink()
    with pytest.raises(DsfedError, match=missing):
        EmbeddedBackbone.load(tmp_path)


def test_load_refuses_weights_of_another_shape(tmp_path) -> None:
    tiny_backbone().save(tmp_path / "a")
    other = EmbeddedBackbone(TINY.model_copy(update={"block_out_channels": (16, 48)}))
    other.save(tmp_path / "b")
    (tmp_path / "b" / BACKBONE_CONFIG).write_text((tmp_path / "a" / BACKBONE_CONFIG).read_text())
    with pytest.raises(DsfedError, match="shape mismatch"):
        EmbeddedBackbone.load(tmp_path / "b")


# ------------------------------------------------------------------------------------------ condition


def test_render_condition_by_hand() -> None:
    m = np.zeros((2, 4, 4), np.uint8)
    m[0, 1:3, 1:3] = 1  # disc: 2x2 centre
    m[1, 1, 1] = 1  # cup: one pixel
    c = render_condition(m, 4)
    assert c.shape == (3, 4, 4) and c.dtype == torch.float32
    assert torch.equal(c[0], torch.as_tensor(m[0]).float())
    assert torch.equal(c[1], torch.as_tensor(m[1]).float())
    assert torch.equal(c[2], 1.0 - torch.as_tensor(m[0]).float())  # background = 1 - union
    one = render_condition(m[None, :1], 4)[0]
    assert torch.equal(one[1], torch.zeros(4, 4)) and torch.equal(one[2], 1.0 - one[0])
    three = render_condition(np.stack([m[0], m[1], m[1]]), 4)
    assert torch.equal(three[2], torch.as_tensor(m[1]).float())
    with pytest.raises(ValueError, match="no class channel"):
        render_condition(np.zeros((0, 4, 4)), 4)


def test_render_condition_draws_any_number_of_classes() -> None:
    """K > 3: (union, level of the last class covering the pixel, background): no class is named."""
    m = np.zeros((5, 4, 4), np.uint8)
    m[0, 0, :] = 1
    m[3, 0, :2] = 1  # class 3 over class 0 on two pixels
    m[4, 3, 3] = 1
    c = render_condition(m, 4)
    union = torch.as_tensor(m.max(0)).float()
    assert torch.equal(c[0], union) and torch.equal(c[2], 1.0 - union)
    assert c[1, 0, 0] == pytest.approx(4 / 5) and c[1, 0, 3] == pytest.approx(1 / 5) and c[1, 3, 3] == pytest.approx(1.0)
    assert float(c[1, 1, 1]) == 0.0


def test_render_condition_resizes_softly() -> None:
    m = np.zeros((1, 2, 32, 32), np.uint8)
    m[0, 0, :16] = 1
    c = render_condition(m, 16)
    assert c.shape == (1, 3, 16, 16)
    assert float(c.min()) >= 0.0 and float(c.max()) <= 1.0
    assert torch.allclose(c[0, 0].mean(), torch.tensor(0.5), atol=0.05)


# ------------------------------------------------------------------------------------------ controlnet


def test_controlnet_keeps_condition_at_sample_size() -> None:
    b = tiny_backbone()
    c = build_controlnet(b.unet)
    assert tuple(c.config.conditioning_embedding_out_channels) == (16,)
    emb = c.controlnet_cond_embedding(torch.rand(2, 3, 16, 16))
    assert emb.shape == (2, 16, 16, 16)
    down, mid = c(torch.randn(2, 3, 16, 16), torch.tensor([3, 3]), encoder_hidden_states=b.encode_prompt(2),
                  controlnet_cond=torch.rand(2, 3, 16, 16), return_dict=False)
    assert down[0].shape[-2:] == (16, 16)
    assert mid.shape[-2:] == (8, 8)


def test_controlnet_save_load_and_mismatch(tmp_path) -> None:
    b = tiny_backbone()
    c = build_controlnet(b.unet)
    torch.nn.init.normal_(c.controlnet_mid_block.weight)
    save_controlnet(c, tmp_path / "c.safetensors", dtype=torch.float32)
    back = load_controlnet(b.unet, tmp_path / "c.safetensors")
    for k, v in c.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    assert "code_hash" in read_metadata(tmp_path / "c.safetensors")
    wider = EmbeddedBackbone(TINY.model_copy(update={"block_out_channels": (16, 48)}))
    with pytest.raises(DsfedError, match=r"c\.safetensors.*shape mismatch"):
        build_controlnet(wider.unet, init=tmp_path / "c.safetensors")
    with pytest.raises(DsfedError, match="does not exist"):
        build_controlnet(b.unet, init=tmp_path / "nope.safetensors")


# ------------------------------------------------------------------------------------------ training


def test_train_controlnet_freezes_backbone_and_trains_controlnet() -> None:
    b = tiny_backbone()
    c = build_controlnet(b.unet)
    before_b = {k: v.clone() for k, v in b.state_dict().items()}
    before_c = {k: v.clone() for k, v in c.state_dict().items()}
    masks = disc_masks(8)
    losses = train_controlnet(b, c, disc_images(masks), masks, DiffusionTrainSpec(steps=3, batch_size=4, amp=False), progress=False)
    assert len(losses) == 3 and all(np.isfinite(losses))
    assert all(torch.equal(before_b[k], v) for k, v in b.state_dict().items())
    changed = [k for k, v in c.state_dict().items() if not torch.equal(before_c[k], v)]
    assert any(k.startswith("controlnet_down_blocks") for k in changed)  # the zero convolutions moved
    assert all(p.requires_grad for p in b.parameters())  # freezing is undone afterwards


def test_prompt_rows_pick_learned_prompts_and_fall_back_to_the_generic_one(caplog) -> None:
    torch.manual_seed(0)
    b = EmbeddedBackbone(TINY.model_copy(update={"prompts": ("a fundus photo", "a skin photo")}))
    assert b.prompt.shape == (3, 1, 8)
    assert b.use_prompt("A  Skin photo") == 2 and torch.equal(b.encode_prompt(2)[1], b.prompt[2])
    with caplog.at_level("WARNING"):
        assert b.use_prompt("a chest x-ray") == 0
    assert "not one the embedded backbone learnt" in caplog.text and "'a skin photo'" in caplog.text
    assert torch.equal(b.encode_prompts(torch.tensor([1, 0])), b.prompt[[1, 0]])
    assert tiny_backbone().use_prompt("anything") == 0  # one generic row only: nothing to warn about


def test_per_sample_prompts_train_only_the_rows_they_use() -> None:
    torch.manual_seed(0)
    b = EmbeddedBackbone(TINY.model_copy(update={"prompts": ("a", "b")}))
    before = b.prompt.detach().clone()
    masks = disc_masks(8)
    spec = DiffusionTrainSpec(steps=3, batch_size=4, amp=False, ema_decay=None, prompt_dropout=0.0, weight_decay=0.0)
    train_backbone(b, disc_images(masks), spec, progress=False, prompt_rows=np.full(8, 1))
    assert not torch.equal(b.prompt[1], before[1])
    assert torch.equal(b.prompt[0], before[0]) and torch.equal(b.prompt[2], before[2])
    with pytest.raises(ValueError, match=r"prompt_rows must be 8 ints in \[0, 3\)"):
        train_backbone(b, disc_images(masks), spec, progress=False, prompt_rows=np.full(8, 3))


def test_backbone_loss_goes_down_and_training_is_deterministic() -> None:
    masks = disc_masks(8)
    images = disc_images(np.repeat(masks[:1], 8, axis=0))  # one image: trivially learnable
    spec = DiffusionTrainSpec(steps=60, batch_size=8, lr=3e-3, warmup_steps=5, amp=False, ema_decay=None, hflip=False)
    runs = [train_backbone(tiny_backbone(), images, spec, progress=False) for _ in range(2)]
    assert runs[0] == runs[1]
    losses = np.array(runs[0])
    assert losses[-15:].mean() < 0.5 * losses[:15].mean()
    other = train_backbone(tiny_backbone(), images, spec.model_copy(update={"seed": 1, "steps": 5}), progress=False)
    assert other != runs[0][:5]


def test_train_accepts_a_dataset_of_dicts() -> None:
    masks = disc_masks(4)
    images = disc_images(masks)
    items = [{"image": torch.as_tensor(i), "mask": torch.as_tensor(m)} for i, m in zip(images, masks, strict=True)]
    b = tiny_backbone()
    spec = DiffusionTrainSpec(steps=2, batch_size=2, amp=False)
    assert len(train_backbone(b, items, spec, progress=False)) == 2
    assert len(train_controlnet(b, build_controlnet(b.unet), items, None, spec, progress=False)) == 2


# ------------------------------------------------------------------------------------------ sampling


def _active_controlnet(b: EmbeddedBackbone):
    """A ControlNet whose zero convolutions (condition embedding output and residual outputs) are not zero."""
    torch.manual_seed(1)
    c = build_controlnet(b.unet)
    with torch.no_grad():
        for block in [c.controlnet_cond_embedding.conv_out, *c.controlnet_down_blocks, c.controlnet_mid_block]:
            torch.nn.init.normal_(block.weight, std=0.3)
    return c


@pytest.mark.parametrize("sampler", ["ddim", "unipc"])
def test_sampling_is_deterministic_and_follows_the_mask(sampler) -> None:
    b = tiny_backbone()
    c = _active_controlnet(b)
    masks = disc_masks(4)
    spec = SamplerSpec(sampler=sampler, steps=3, guidance_scale=2.0)
    first = sample(b, c, masks, spec, seed=7, batch_size=4, progress=False)
    assert first.shape == (4, 3, 16, 16) and first.dtype == np.uint8
    assert np.array_equal(first, sample(b, c, masks, spec, seed=7, batch_size=4, progress=False))
    split = sample(b, c, masks, spec, seed=7, batch_size=3, progress=False)
    assert np.abs(split.astype(int) - first.astype(int)).max() <= 1  # batch size does not change samples
    other_masks = disc_masks(4, seed=1)
    moved = sample(b, c, other_masks, spec, seed=7, batch_size=4, progress=False)
    assert np.abs(moved.astype(int) - first.astype(int)).mean() > 2
    reseeded = sample(b, c, masks, spec, seed=8, batch_size=4, progress=False)
    assert not np.array_equal(reseeded, first)


def test_guidance_scale_one_and_unconditional_sampling() -> None:
    b = tiny_backbone()
    c = _active_controlnet(b)
    masks = disc_masks(2)
    spec = SamplerSpec(steps=2, guidance_scale=1.0)
    assert sample(b, c, masks, spec, progress=False).shape == (2, 3, 16, 16)
    plain = sample(b, None, masks, spec, progress=False)
    assert np.array_equal(plain, sample(b, None, disc_masks(2, seed=3), spec, progress=False))  # mask ignored
