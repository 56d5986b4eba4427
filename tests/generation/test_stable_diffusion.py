"""Stable Diffusion 1.5 as backbone, on a tiny SD-1.5-layout folder built here (latents 8 px, images 16 px)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, ControlNetModel, PNDMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from dsfed.errors import DsfedError
from dsfed.generation import (
    DiffusionTrainSpec,
    SamplerSpec,
    StableDiffusionBackbone,
    build_controlnet,
    load_controlnet,
    load_official_controlnet,
    save_controlnet,
    train_controlnet,
)
from dsfed.generation.controlnet import default_embedding_channels
from dsfed.generation.sample import make_sampler, sample
from tests.conftest import ModuleTmp
from tests.generation.test_generation import disc_masks

PROMPT = "a retinal fundus photograph"
LETTERS = "abcdefghijklmnopqrstuvwxyz"
# SD 1.5's model_index.json, without the safety checker and feature extractor nobody here loads
MODEL_INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "_diffusers_version": "0.6.0",
    "feature_extractor": [None, None],
    "safety_checker": [None, None],
    "scheduler": ["diffusers", "PNDMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)  # another process may hold the second core (see DESIGN: Threads)


def tiny_unet(cross_attention_dim: int = 32) -> UNet2DConditionModel:
    """SD's UNet shape in miniature: cross-attention down/up blocks, 4 latent channels, 8 px latents."""
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim, attention_head_dim=8, norm_num_groups=8,
    )


def tiny_text_encoder(hidden: int = 32) -> CLIPTextModel:
    config = CLIPTextConfig(vocab_size=60, hidden_size=hidden, intermediate_size=37, num_hidden_layers=2,
                            num_attention_heads=4, max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    return CLIPTextModel(config)


def write_tokenizer(folder: Path) -> None:
    """SD 1.5's tokenizer files with a tiny BPE vocabulary: letters (word-final too), one merge."""
    folder.mkdir(parents=True)
    tokens = ["<|startoftext|>", "<|endoftext|>", *LETTERS, *(c + "</w>" for c in LETTERS), "ph", "ph</w>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\np h\np h</w>\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 77, "do_lower_case": True}))


def build_sd_folder(root: Path, bin_weights: bool = False) -> Path:
    """A tiny SD 1.5 diffusers folder: every component under its official name, saved by its library."""
    torch.manual_seed(0)
    root.mkdir(parents=True)
    (root / "model_index.json").write_text(json.dumps(MODEL_INDEX))
    tiny_unet().save_pretrained(root / "unet", safe_serialization=not bin_weights)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=4,
                        norm_num_groups=4, layers_per_block=1, sample_size=16)
    vae.save_pretrained(root / "vae", safe_serialization=not bin_weights)
    text_encoder = tiny_text_encoder()
    text_encoder.save_pretrained(root / "text_encoder")
    if bin_weights:  # transformers 5 only writes safetensors: write the old .bin layout by hand
        (root / "text_encoder" / "model.safetensors").unlink()
        torch.save(text_encoder.state_dict(), root / "text_encoder" / "pytorch_model.bin")
    write_tokenizer(root / "tokenizer")
    PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True,
                  set_alpha_to_one=False, steps_offset=1).save_pretrained(root / "scheduler")
    return root


@pytest.fixture(scope="module")
def sd_dir(module_tmp: ModuleTmp) -> Path:
    return build_sd_folder(module_tmp("sd") / "sd15")


@pytest.fixture(scope="module")
def backbone(sd_dir: Path) -> StableDiffusionBackbone:
    return StableDiffusionBackbone.from_pretrained(sd_dir, prompt=PROMPT)


def active(controlnet: ControlNetModel) -> ControlNetModel:
    """Zero convolutions made non-zero, so the ControlNet changes what the UNet predicts."""
    torch.manual_seed(1)
    with torch.no_grad():
        for block in [controlnet.controlnet_cond_embedding.conv_out, *controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block]:
            torch.nn.init.normal_(block.weight, std=0.3)
    return controlnet


# ------------------------------------------------------------------------------------------ loading


def test_loads_and_encodes_the_prompt_once(sd_dir, backbone) -> None:
    b = backbone
    assert (b.sample_size, b.in_channels, b.condition_size, b.pixel_space) == (8, 4, 16, False)
    assert not any("text_encoder" in name for name, _ in b.named_modules())
    assert b.prompt_embeds.shape == (1, 77, 32)
    assert b.encode_prompt(3).shape == (3, 77, 32)
    tokenizer = CLIPTokenizer.from_pretrained(sd_dir / "tokenizer")
    ids = tokenizer(PROMPT, padding="max_length", max_length=77, return_tensors="pt").input_ids
    assert ids[0, 0] == 0 and (ids[0, -20:] == 1).all()  # <|startoftext|> ... padded with <|endoftext|>
    with torch.no_grad():
        expected = CLIPTextModel.from_pretrained(sd_dir / "text_encoder").eval()(ids).last_hidden_state
    assert torch.allclose(b.prompt_embeds, expected)
    other = StableDiffusionBackbone.from_pretrained(sd_dir, prompt="a photograph")
    assert not torch.allclose(other.prompt_embeds, b.prompt_embeds)
    config = b.scheduler_config
    assert (config["beta_schedule"], config["beta_start"], config["beta_end"]) == ("scaled_linear", 0.00085, 0.012)
    assert config["num_train_timesteps"] == 1000 and config["prediction_type"] == "epsilon"
    assert config["clip_sample"] is False and config["thresholding"] is False
    assert not any(p.requires_grad for p in b.parameters())


def test_bin_weights_load_like_safetensors(tmp_path, backbone) -> None:
    b = StableDiffusionBackbone.from_pretrained(build_sd_folder(tmp_path / "sd", bin_weights=True), prompt=PROMPT)
    assert not list((tmp_path / "sd").rglob("*.safetensors"))
    own, other = backbone.state_dict(), b.state_dict()
    assert own.keys() == other.keys()
    assert all(torch.equal(own[k], other[k]) for k in own)


def test_encode_decode_shapes(backbone) -> None:
    images = torch.rand(2, 3, 32, 32) * 2 - 1  # resized to the condition size (16) before the VAE
    latents = backbone.encode_images(images)
    assert latents.shape == (2, 4, 8, 8) and latents.dtype == torch.float32
    assert torch.equal(latents, backbone.encode_images(images))  # the posterior's mean: deterministic
    decoded = backbone.decode_samples(latents)
    assert decoded.shape == (2, 3, 16, 16)
    assert float(decoded.min()) >= -1.0 and float(decoded.max()) <= 1.0


@pytest.mark.parametrize(
    ("remove", "named"),
    [
        ("model_index.json", "model_index.json is missing"),
        ("unet", "unet/ is missing"),
        ("unet/config.json", "unet/config.json is missing"),
        ("vae", "vae/ is missing"),
        ("vae/diffusion_pytorch_model.safetensors", r"vae/diffusion_pytorch_model\.safetensors \(or diffusion_pytorch_model\.bin\) is missing"),
        ("text_encoder", "text_encoder/ is missing"),
        ("text_encoder/model.safetensors", r"text_encoder/model\.safetensors \(or pytorch_model\.bin\) is missing"),
        ("tokenizer", "tokenizer/ is missing"),
        ("tokenizer/merges.txt", "tokenizer/merges.txt is missing"),
        ("scheduler", "scheduler/ is missing"),
        ("scheduler/scheduler_config.json", "scheduler/scheduler_config.json is missing"),
    ],
)
def test_a_missing_component_is_named(tmp_path, sd_dir, remove, named) -> None:
    root = tmp_path / "sd"
    shutil.copytree(sd_dir, root)
    target = root / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(DsfedError, match=named) as info:
        StableDiffusionBackbone.from_pretrained(root)
    message = str(info.value)
    assert "\n" not in message and str(root) in message and "Stable Diffusion 1.5 folder" in message


def test_components_that_do_not_fit_each_other(tmp_path, sd_dir) -> None:
    root = tmp_path / "sd"
    shutil.copytree(sd_dir, root)
    shutil.rmtree(root / "text_encoder")
    tiny_text_encoder(hidden=16).save_pretrained(root / "text_encoder")
    with pytest.raises(DsfedError, match="cross_attention_dim 32"):
        StableDiffusionBackbone.from_pretrained(root)
    (root / "scheduler" / "scheduler_config.json").write_text('{"beta_schedule": "wobbly"}')
    with pytest.raises(DsfedError, match="scheduler_config.json: invalid scheduler config"):
        StableDiffusionBackbone.from_pretrained(root)


# ------------------------------------------------------------------------------------------ controlnet


def test_controlnet_for_a_latent_backbone(tmp_path, backbone) -> None:
    c = build_controlnet(backbone)
    assert tuple(c.config.conditioning_embedding_out_channels) == (16, 32)  # 16 px condition -> 8 px latents
    assert default_embedding_channels(backbone.unet) == (16, 32, 96, 256)  # a bare 4-channel UNet: SD's 8x VAE
    down, mid = c(torch.randn(2, 4, 8, 8), torch.tensor([3, 3]), encoder_hidden_states=backbone.encode_prompt(2),
                  controlnet_cond=torch.rand(2, 3, 16, 16), return_dict=False)
    assert down[0].shape == (2, 32, 8, 8)
    save_controlnet(active(c), tmp_path / "c.safetensors", dtype=torch.float32)
    back = load_controlnet(backbone, tmp_path / "c.safetensors")
    assert all(torch.equal(back.state_dict()[k], v) for k, v in c.state_dict().items())
    pixel = build_controlnet(backbone.unet, embedding_channels=(16,))  # a pixel-space embedding: 1x
    save_controlnet(pixel, tmp_path / "pixel.safetensors")
    with pytest.raises(DsfedError, match=r"pixel\.safetensors: conditioning_embedding_out_channels \[16\] downsample .* 1x.* 2x"):
        load_controlnet(backbone, tmp_path / "pixel.safetensors")


def test_official_controlnet_folder_as_init(tmp_path, backbone) -> None:
    torch.manual_seed(2)
    official = active(ControlNetModel.from_unet(backbone.unet, conditioning_embedding_out_channels=(16, 32)))
    official.save_pretrained(tmp_path / "seg")
    for loaded in (load_official_controlnet(tmp_path / "seg", backbone), build_controlnet(backbone, init=tmp_path / "seg"),
                   load_controlnet(backbone.unet, tmp_path / "seg")):
        assert all(torch.equal(loaded.state_dict()[k], v) for k, v in official.state_dict().items())

    ControlNetModel.from_unet(tiny_unet(cross_attention_dim=16), conditioning_embedding_out_channels=(16, 32)).save_pretrained(tmp_path / "other")
    with pytest.raises(DsfedError, match=r"other/config\.json: .*cross_attention_dim is 16 in the ControlNet, 32 in the UNet") as info:
        load_official_controlnet(tmp_path / "other", backbone)
    assert "block_out_channels" not in str(info.value)  # only the fields that differ

    ControlNetModel.from_unet(backbone.unet).save_pretrained(tmp_path / "eight")  # diffusers' default: 8x
    with pytest.raises(DsfedError, match=r"eight/config\.json: conditioning_embedding_out_channels \[16, 32, 96, 256\]"):
        load_official_controlnet(tmp_path / "eight", backbone)

    (tmp_path / "seg" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(DsfedError, match=r"seg/diffusion_pytorch_model\.safetensors: missing"):
        load_official_controlnet(tmp_path / "seg", backbone)


# ------------------------------------------------------------------------------------------ training and sampling


def test_train_controlnet_changes_only_the_controlnet(backbone) -> None:
    c = build_controlnet(backbone)
    before_b = {k: v.clone() for k, v in backbone.state_dict().items()}
    before_c = {k: v.clone() for k, v in c.state_dict().items()}
    masks = disc_masks(4, size=32)  # images and masks at 32 px: resized to the 16 px condition size
    images = np.where(masks[:, :1].astype(bool), np.uint8(230), np.uint8(60)).repeat(3, axis=1)
    spec = DiffusionTrainSpec(steps=3, batch_size=2, amp=False, warmup_steps=0)
    losses = train_controlnet(backbone, c, images, masks, spec, progress=False)
    assert len(losses) == 3 and all(np.isfinite(losses))
    assert all(torch.equal(before_b[k], v) for k, v in backbone.state_dict().items())
    changed = [k for k, v in c.state_dict().items() if not torch.equal(before_c[k], v)]
    assert any(k.startswith("controlnet_down_blocks") for k in changed)
    assert not any(p.requires_grad for p in backbone.parameters())  # frozen before, frozen after


@pytest.mark.parametrize("sampler", ["ddim", "unipc"])
def test_sampling_decodes_at_condition_size_and_is_deterministic(backbone, sampler) -> None:
    c = active(build_controlnet(backbone))
    masks = disc_masks(3)
    spec = SamplerSpec(sampler=sampler, steps=2, guidance_scale=2.0)
    first = sample(backbone, c, masks, spec, seed=5, batch_size=2, progress=False)
    assert first.shape == (3, 3, 16, 16) and first.dtype == np.uint8
    assert np.array_equal(first, sample(backbone, c, masks, spec, seed=5, batch_size=2, progress=False))
    assert not np.array_equal(first, sample(backbone, c, masks, spec, seed=6, batch_size=2, progress=False))
    assert sample(backbone, None, masks[:0], spec, progress=False).shape == (0, 3, 16, 16)


def test_latent_space_samplers_neither_clip_nor_threshold(backbone) -> None:
    ddim, unipc = make_sampler("ddim", backbone.scheduler_config, False), make_sampler("unipc", backbone.scheduler_config, False)
    assert ddim.config.clip_sample is False and unipc.config.thresholding is False
    ddim, unipc = make_sampler("ddim", backbone.scheduler_config), make_sampler("unipc", backbone.scheduler_config)
    assert ddim.config.clip_sample is True and unipc.config.thresholding is True  # pixel space (the default)
