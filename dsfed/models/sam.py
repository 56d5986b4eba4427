"""SAM-family segmenters (SAM ViT-B/L/H, TinySAM/MobileSAM, small demo presets) behind one interface.

Builds ``segment_anything.modeling.Sam`` with the official module layout (so official checkpoints load
strictly into ``.sam``) and adds a 1x1 head mapping the decoder's mask-token outputs to C classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from torch import Tensor, nn

from dsfed.models.segmenter import PromptMode, Segmenter, check_boxes, resize
from dsfed.models.tinyvit import TinyViT

__all__ = ["DecoderConfig", "SamSegmenter", "TinyViTConfig", "ViTConfig", "adapt_state_dict_to_size", "build_sam"]

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
EMBED_DIM = 256  # prompt/decoder width; every SAM variant uses 256
PATCH = 16  # total encoder stride: embeddings are (S/16, S/16), low-res masks (S/4, S/4)


@dataclass(frozen=True)
class ViTConfig:
    """segment-anything's ViT image encoder (``sam_model_registry`` values for the official sizes)."""

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    window_size: int = 14


@dataclass(frozen=True)
class TinyViTConfig:
    """TinySAM / MobileSAM's TinyViT encoder."""

    embed_dims: tuple[int, ...] = (64, 128, 160, 320)
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (2, 4, 5, 10)
    window_sizes: tuple[int, ...] = (7, 7, 14, 7)


@dataclass(frozen=True)
class DecoderConfig:
    """SAM's mask decoder (official: two-way transformer depth 2, MLP 2048, 8 heads, 3 multimask outputs)."""

    depth: int = 2
    mlp_dim: int = 2048
    num_heads: int = 8
    num_multimask_outputs: int = 3
    iou_head_hidden_dim: int = 256


@dataclass(frozen=True)
class SamPreset:
    """A named SAM-family architecture and the input size it was trained at."""

    encoder: ViTConfig | TinyViTConfig
    image_size: int
    decoder: DecoderConfig = field(default_factory=DecoderConfig)


def _encoder(cfg: ViTConfig | TinyViTConfig, image_size: int) -> nn.Module:
    if isinstance(cfg, ViTConfig):
        return ImageEncoderViT(
            img_size=image_size,
            patch_size=PATCH,
            embed_dim=cfg.embed_dim,
            depth=cfg.depth,
            num_heads=cfg.num_heads,
            mlp_ratio=4,
            out_chans=EMBED_DIM,
            qkv_bias=True,
            norm_layer=lambda dim: nn.LayerNorm(dim, eps=1e-6),  # type: ignore[arg-type]
            use_rel_pos=True,
            rel_pos_zero_init=True,
            window_size=cfg.window_size,
            global_attn_indexes=cfg.global_attn_indexes,
        )
    return TinyViT(
        img_size=image_size,
        embed_dims=cfg.embed_dims,
        depths=cfg.depths,
        num_heads=cfg.num_heads,
        window_sizes=cfg.window_sizes,
    )


def build_sam(preset: SamPreset, image_size: int | None = None) -> Sam:
    """A ``Sam`` with the official module layout at ``image_size`` (default: the preset's)."""
    size = image_size or preset.image_size
    if size % PATCH:
        raise ValueError(f"SAM input size must be a multiple of {PATCH}, got {size}")
    grid = size // PATCH
    dec = preset.decoder
    return Sam(
        image_encoder=_encoder(preset.encoder, size),
        prompt_encoder=PromptEncoder(
            embed_dim=EMBED_DIM, image_embedding_size=(grid, grid), input_image_size=(size, size), mask_in_chans=16
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=dec.num_multimask_outputs,
            transformer=TwoWayTransformer(depth=dec.depth, embedding_dim=EMBED_DIM, mlp_dim=dec.mlp_dim, num_heads=dec.num_heads),
            transformer_dim=EMBED_DIM,
            iou_head_depth=3,
            iou_head_hidden_dim=dec.iou_head_hidden_dim,
        ),
        pixel_mean=list(PIXEL_MEAN),
        pixel_std=list(PIXEL_STD),
    )


class SamSegmenter(Segmenter):
    """SAM-family model as a :class:`Segmenter`: logits at S/4 from the decoder's mask tokens.

    ``prompt='none'`` runs the decoder with no prompt tokens and the no-mask dense embedding, passed once
    for the whole batch (the two-way transformer broadcasts one token set over B images; expanding it to
    B would make segment-anything's ``predict_masks`` repeat every image B times). ``prompt='box'`` uses
    one box per image. ``Sam.forward`` is ``no_grad``, so this calls the submodules directly.

    Args:
        sam: the official-layout model (load official checkpoints into ``.sam``).
        num_classes: C; ``head`` (1x1 conv) maps the decoder's mask-token outputs to C logits, initialised
            so class c starts as mask token c (with official weights, class 0 = SAM's single-mask output).
        output_size: Sm.
        prompt: 'none' or 'box'.
    """

    class_head_keys = ("head.weight", "head.bias")  # re-initialised when a checkpoint has other classes

    def __init__(self, sam: Sam, num_classes: int, output_size: int, prompt: PromptMode = "none") -> None:
        super().__init__(num_classes, sam.image_encoder.img_size, output_size, prompt)
        self.sam = sam
        tokens = sam.mask_decoder.num_mask_tokens
        self.head = nn.Conv2d(tokens, num_classes, kernel_size=1)
        with torch.no_grad():
            self.head.weight.zero_()
            assert self.head.bias is not None  # Conv2d(bias=True)
            self.head.bias.zero_()
            for c in range(num_classes):
                self.head.weight[c, c % tokens] = 1.0

    def preprocess(self, images: Tensor) -> Tensor:
        """(B, 3, S, S) in [0, 1] -> SAM's normalised pixels."""
        return (images * 255.0 - self.sam.pixel_mean) / self.sam.pixel_std

    def embed(self, images: Tensor) -> Tensor:
        """(B, 3, S, S) in [0, 1] at ``input_size`` -> image embeddings (B, 256, S/16, S/16)."""
        return self.sam.image_encoder(self.preprocess(images))

    def decode(self, embeddings: Tensor, boxes: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Image embeddings (B, 256, h, w) -> mask-token masks (B, T, 4h, 4w) and IoU predictions (B, T)."""
        pe = self.sam.prompt_encoder
        dec = self.sam.mask_decoder
        if boxes is None:
            sparse, dense = pe(points=None, boxes=None, masks=None)  # (1, 0, 256), (1, 256, h, w)
        else:
            pixel_boxes = check_boxes(boxes, embeddings.shape[0]) * self.input_size
            sparse, dense = pe(points=None, boxes=pixel_boxes, masks=None)  # (B, 2, 256), (B, 256, h, w)
        tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
        tokens = torch.cat([tokens.unsqueeze(0).expand(sparse.shape[0], -1, -1), sparse], dim=1)
        src = embeddings + dense
        b, c, h, w = src.shape
        hs, src_out = dec.transformer(src, pe.get_dense_pe(), tokens)  # hs: (B, T', 256)
        iou_out, mask_out = hs[:, 0], hs[:, 1 : 1 + dec.num_mask_tokens]
        upscaled = dec.output_upscaling(src_out.transpose(1, 2).reshape(b, c, h, w))  # (B, 32, 4h, 4w)
        hyper = torch.stack([mlp(mask_out[:, i]) for i, mlp in enumerate(dec.output_hypernetworks_mlps)], dim=1)
        masks = (hyper @ upscaled.flatten(2)).view(b, -1, *upscaled.shape[-2:])
        return masks, dec.iou_prediction_head(iou_out)

    def predict(self, images: Tensor, boxes: Tensor | None) -> Tensor:
        masks, _ = self.decode(self.embed(images), boxes)
        return self.head(masks)

    def forward_embeddings(self, embeddings: Tensor, boxes: Tensor | None = None) -> Tensor:
        """What :meth:`forward` returns, from the image embeddings :meth:`embed` gave for the images resized to
        ``input_size``: (B, 256, h, w) -> logits (B, C, output_size, output_size). For a frozen encoder."""
        masks, _ = self.decode(embeddings, boxes if self.prompt == "box" else None)
        return resize(self.head(masks), self.output_size)


def adapt_state_dict_to_size(state: dict[str, Tensor], model: Sam) -> dict[str, Tensor]:
    """Resize size-dependent ViT tensors of an official checkpoint to ``model``'s input size.

    ``image_encoder.pos_embed`` (1, g, g, C) is interpolated bicubically; the relative-position tables
    ``rel_pos_h/w`` (2g-1, d) of global-attention blocks linearly (window blocks keep theirs). TinyViT
    weights do not depend on the input size. Tensors that already fit are returned unchanged.
    """
    target = model.state_dict()
    out = dict(state)
    for key, value in state.items():
        want = target.get(key)
        if want is None or want.shape == value.shape:
            continue
        if key.endswith("pos_embed") and value.ndim == 4:
            grid = want.shape[1]
            out[key] = F.interpolate(value.permute(0, 3, 1, 2).float(), size=(grid, grid), mode="bicubic", align_corners=False).permute(0, 2, 3, 1).to(value.dtype)
        elif (key.endswith("rel_pos_h") or key.endswith("rel_pos_w")) and value.ndim == 2:
            out[key] = F.interpolate(value.T.unsqueeze(0).float(), size=want.shape[0], mode="linear", align_corners=False)[0].T.to(value.dtype)
    return out


def sam_presets() -> dict[str, SamPreset]:
    """The SAM-family presets by registry name."""
    return {
        # official segment-anything configurations (build_sam.py), 1024 px
        "sam_vit_b": SamPreset(ViTConfig(768, 12, 12, (2, 5, 8, 11)), 1024),
        "sam_vit_l": SamPreset(ViTConfig(1024, 24, 16, (5, 11, 17, 23)), 1024),
        "sam_vit_h": SamPreset(ViTConfig(1280, 32, 16, (7, 15, 23, 31)), 1024),
        # TinySAM / MobileSAM: TinyViT-5M + the official decoder
        "tinysam": SamPreset(TinyViTConfig(), 1024),
        # CPU demo presets: the same classes, small; the server model is the larger one
        "sam_demo": SamPreset(ViTConfig(256, 6, 8, (2, 5), window_size=8), 256),
        "tinysam_demo": SamPreset(TinyViTConfig(depths=(1, 1, 2, 1)), 256, DecoderConfig(mlp_dim=512)),
    }
