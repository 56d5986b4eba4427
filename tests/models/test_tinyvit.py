"""TinyViT encoder: official MobileSAM/TinySAM state-dict layout, strict checkpoint loading, sizes, gradients."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from dsfed.models.tinyvit import TinyViT, _bias_index

# TinyViT-5M (MobileSAM / TinySAM image encoder)
DIMS, DEPTHS, HEADS, WINDOWS = (64, 128, 160, 320), (2, 2, 6, 2), (2, 4, 5, 10), (7, 7, 14, 7)


def build_sam(img_size: int = 1024) -> Sam:
    """The MobileSAM/TinySAM assembly (``build_sam_vit_t``) around our encoder."""
    grid = img_size // 16
    return Sam(
        image_encoder=TinyViT(img_size),
        prompt_encoder=PromptEncoder(
            embed_dim=256, image_embedding_size=(grid, grid), input_image_size=(img_size, img_size), mask_in_chans=16
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
            transformer_dim=256,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )


def official_encoder_layout() -> dict[str, tuple[int, ...]]:
    """Key -> shape of the encoder state dict, written out from ``mobile_sam/modeling/tiny_vit_sam.py``."""
    out: dict[str, tuple[int, ...]] = {}

    def conv_bn(p: str, cin: int, cout: int, k: int, groups: int = 1) -> None:
        out[f"{p}.c.weight"] = (cout, cin // groups, k, k)
        for name in ("weight", "bias", "running_mean", "running_var"):
            out[f"{p}.bn.{name}"] = (cout,)
        out[f"{p}.bn.num_batches_tracked"] = ()

    def linear(p: str, cin: int, cout: int) -> None:
        out[f"{p}.weight"], out[f"{p}.bias"] = (cout, cin), (cout,)

    def norm(p: str, c: int) -> None:
        out[f"{p}.weight"], out[f"{p}.bias"] = (c,), (c,)

    conv_bn("patch_embed.seq.0", 3, DIMS[0] // 2, 3)
    conv_bn("patch_embed.seq.2", DIMS[0] // 2, DIMS[0], 3)
    for j in range(DEPTHS[0]):
        p, hid = f"layers.0.blocks.{j}", DIMS[0] * 4
        conv_bn(f"{p}.conv1", DIMS[0], hid, 1)
        conv_bn(f"{p}.conv2", hid, hid, 3, groups=hid)
        conv_bn(f"{p}.conv3", hid, DIMS[0], 1)
    for i in (1, 2, 3):
        d = DIMS[i]
        for j in range(DEPTHS[i]):
            p = f"layers.{i}.blocks.{j}"
            norm(f"{p}.attn.norm", d)
            linear(f"{p}.attn.qkv", d, 3 * d)
            linear(f"{p}.attn.proj", d, d)
            out[f"{p}.attn.attention_biases"] = (HEADS[i], WINDOWS[i] ** 2)
            norm(f"{p}.mlp.norm", d)
            linear(f"{p}.mlp.fc1", d, 4 * d)
            linear(f"{p}.mlp.fc2", 4 * d, d)
            conv_bn(f"{p}.local_conv", d, d, 3, groups=d)
    for i in (0, 1, 2):
        p, cin, cout = f"layers.{i}.downsample", DIMS[i], DIMS[i + 1]
        conv_bn(f"{p}.conv1", cin, cout, 1)
        conv_bn(f"{p}.conv2", cout, cout, 3, groups=cout)
        conv_bn(f"{p}.conv3", cout, cout, 1)
    norm("norm_head", DIMS[3])
    linear("head", DIMS[3], 1000)
    out["neck.0.weight"] = (256, DIMS[3], 1, 1)
    norm("neck.1", 256)
    out["neck.2.weight"] = (256, 256, 3, 3)
    norm("neck.3", 256)
    return out


def randomised(state: dict[str, torch.Tensor], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random values with the same keys/shapes (positive running variances, norm scales near 1)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in state.items():
        if not v.is_floating_point():
            out[k] = v.clone()
        elif k.endswith("running_var"):
            out[k] = torch.rand(v.shape, generator=g) * 0.5 + 0.75
        else:
            r = torch.randn(v.shape, generator=g) * 0.2
            out[k] = r + 1.0 if k.endswith(("bn.weight", "norm.weight", "norm_head.weight")) else r
    return out


def test_state_dict_matches_official_layout() -> None:
    sd = build_sam(1024).state_dict()
    enc = {k.removeprefix("image_encoder."): tuple(v.shape) for k, v in sd.items() if k.startswith("image_encoder.")}
    assert enc == official_encoder_layout()
    spot = {
        "image_encoder.patch_embed.seq.0.c.weight": (32, 3, 3, 3),
        "image_encoder.layers.0.blocks.0.conv1.c.weight": (256, 64, 1, 1),
        "image_encoder.layers.0.downsample.conv2.c.weight": (128, 1, 3, 3),
        "image_encoder.layers.1.blocks.0.attn.attention_biases": (4, 49),
        "image_encoder.layers.1.blocks.0.attn.qkv.weight": (384, 128),
        "image_encoder.layers.2.blocks.0.attn.attention_biases": (5, 196),
        "image_encoder.layers.2.blocks.5.mlp.fc1.weight": (640, 160),
        "image_encoder.layers.2.downsample.conv2.c.weight": (320, 1, 3, 3),
        "image_encoder.layers.3.blocks.1.local_conv.bn.running_var": (320,),
        "image_encoder.layers.3.blocks.1.attn.attention_biases": (10, 49),
        "image_encoder.norm_head.weight": (320,),
        "image_encoder.head.weight": (1000, 320),
        "image_encoder.neck.0.weight": (256, 320, 1, 1),
        "image_encoder.neck.3.bias": (256,),
        "prompt_encoder.mask_downscaling.0.weight": (4, 1, 2, 2),
        "mask_decoder.iou_prediction_head.layers.2.weight": (4, 256),
    }
    for k, shape in spot.items():
        assert tuple(sd[k].shape) == shape, k
    assert "image_encoder.layers.3.downsample.conv1.c.weight" not in sd  # last stage has no merging
    assert (len(sd), len(enc)) == (439, 302)
    assert not [k for k in sd if k.endswith(".ab") or "attention_bias_idxs" in k]


@pytest.mark.parametrize("window", [(7, 7), (14, 14), (3, 5)])
def test_bias_index_follows_official_enumeration(window: tuple[int, int]) -> None:
    points = list(itertools.product(range(window[0]), range(window[1])))
    offsets: dict[tuple[int, int], int] = {}
    idxs = [
        offsets.setdefault((abs(p[0] - q[0]), abs(p[1] - q[1])), len(offsets)) for p in points for q in points
    ]
    assert torch.equal(_bias_index(window), torch.tensor(idxs).view(len(points), len(points)))


def test_official_layout_checkpoint_loads_strictly(tmp_path: Path) -> None:
    src = build_sam(1024)
    src.load_state_dict(randomised(src.state_dict()), strict=True)
    path = tmp_path / "tinysam_layout.pth"
    torch.save(src.state_dict(), path)

    dst = build_sam(1024)
    result = dst.load_state_dict(torch.load(path, weights_only=True), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    for (k, a), (_, b) in zip(src.state_dict().items(), dst.state_dict().items(), strict=True):
        assert torch.equal(a, b), k

    src.eval(), dst.eval()
    x = torch.randn(1, 3, 1024, 1024)
    with torch.no_grad():
        emb = src.image_encoder(x)
        assert emb.shape == (1, 256, 64, 64)
        assert torch.equal(emb, dst.image_encoder(x))
        # the embedding plugs into SAM's prompt encoder + mask decoder
        sparse, dense = dst.prompt_encoder(points=None, boxes=torch.tensor([[100.0, 200.0, 600.0, 700.0]]), masks=None)
        masks, iou = dst.mask_decoder(
            image_embeddings=emb,
            image_pe=dst.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
    assert masks.shape == (1, 1, 256, 256) and iou.shape == (1, 1)


def test_parameter_counts() -> None:
    sam = build_sam(1024)

    def count(m: torch.nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    enc = sam.image_encoder
    head = count(enc.head) + count(enc.norm_head)
    assert (count(enc), head, count(enc.neck)) == (6_065_532, 321_640, 672_768)
    assert (count(sam.prompt_encoder), count(sam.mask_decoder), count(sam)) == (6_220, 4_058_340, 10_130_092)
    assert abs(count(sam) - 10.13e6) < 0.01e6  # TinySAM / MobileSAM: ~10.1 M
    assert abs((count(enc) - head) - 5.78e6) / 5.78e6 < 0.01  # MobileSAM paper: encoder 5.78 M


@pytest.mark.parametrize("size", [512, 256, 128, 64])
def test_forward_shapes(size: int) -> None:
    model = TinyViT(size).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 256, size // 16, size // 16)
    assert torch.isfinite(out).all()


def test_gradients_reach_every_encoder_parameter() -> None:
    model = TinyViT(64)
    model.load_state_dict(randomised(model.state_dict(), seed=1))
    model.train()
    out = model(torch.randn(2, 3, 64, 64))
    (out * torch.randn_like(out)).sum().backward()
    for name, p in model.named_parameters():
        if name.startswith(("head.", "norm_head.")):
            assert p.grad is None, name
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_weights_are_independent_of_input_size() -> None:
    big, small = TinyViT(1024), TinyViT(256)
    state = randomised(big.state_dict(), seed=2)
    big.load_state_dict(state, strict=True)
    small.load_state_dict(big.state_dict(), strict=True)
    assert small.img_size == 256 and small.grid_size == 16
    with torch.no_grad():
        assert small.eval()(torch.randn(1, 3, 256, 256)).shape == (1, 256, 16, 16)


def test_eval_mode_uses_current_weights() -> None:
    """No cached bias table: weights loaded after ``eval()`` take effect, and none enter the state dict."""
    model = TinyViT(64).eval()
    state = randomised(model.state_dict(), seed=3)
    model.load_state_dict(state)
    fresh = TinyViT(64)
    fresh.load_state_dict(state)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), fresh.eval()(x))
    assert set(model.state_dict()) == set(TinyViT(64).train().state_dict())


def test_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="multiple of 16"):
        TinyViT(100)
    with pytest.raises(ValueError, match="expected input"):
        TinyViT(64)(torch.randn(1, 3, 128, 128))
