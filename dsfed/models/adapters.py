"""Medical-SAM-Adapter blocks in SAM's ViT image encoder: the FedMSA baseline (DSFedMed §1.11).

As Medical-SAM-Adapter's 2-D ViT block (the code FedFMS trains), in every block of the encoder:
- a ``Space_Adapter`` on the attention's output, with its skip connection: ``attn(x) + A(attn(x))``;
- an ``MLP_Adapter`` beside the MLP, scaled by 0.5, without a skip: ``mlp(x) + 0.5 * A(x)``;
where ``A(x) = fc2(GELU(fc1(x)))`` with a 0.25 bottleneck. Every other image-encoder parameter (patch
embedding, attention, MLP, norms, neck) is frozen; the prompt encoder, mask decoder, class head and the
adapters train, and only they travel (:attr:`SamSegmenter.frozen_keys`). Left out: the ``Depth_Adapter``,
which attends across the slices of a 3-D volume and does nothing for 2-D images.

The blocks are segment-anything's own: their attention and MLP modules become subclasses that add the
adapter (``__class__`` is switched in place), so every official key keeps its name and an official or
foundation checkpoint loads unchanged; only the adapter keys are new.
"""

from __future__ import annotations

from segment_anything.modeling.common import MLPBlock
from segment_anything.modeling.image_encoder import Attention, ImageEncoderViT
from torch import Tensor, nn

__all__ = ["ADAPTERS", "FROZEN_BY_ADAPTERS", "Adapter", "add_msa_adapters"]

ADAPTERS = ("none", "msa")
FROZEN_BY_ADAPTERS = r"^sam\.image_encoder\.(?!.*\.adapter\.)"
"""Segmenter keys the adapters freeze: the image encoder but its adapters."""

MLP_ADAPTER_SCALE = 0.5


class Adapter(nn.Module):
    """Medical-SAM-Adapter's bottleneck: ``x + fc2(GELU(fc1(x)))`` (or without ``x``), over the last dim.

    Args:
        dim: D, the channels of (..., D) inputs. ratio: the bottleneck's share of D.
        skip: add the input back.
    """

    def __init__(self, dim: int, ratio: float = 0.25, skip: bool = True) -> None:
        super().__init__()
        hidden = max(1, int(dim * ratio))
        self.skip = skip
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.fc2(self.act(self.fc1(x)))
        return x + out if self.skip else out


class AdaptedAttention(Attention):
    """segment-anything's block attention followed by the ``Space_Adapter`` (with skip)."""

    adapter: Adapter

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, H, W, D) -> (B, H, W, D)."""
        return self.adapter(super().forward(x))


class AdaptedMLP(MLPBlock):
    """segment-anything's block MLP plus 0.5 x the ``MLP_Adapter`` (no skip) on the same input."""

    adapter: Adapter

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, H, W, D) -> (B, H, W, D)."""
        return super().forward(x) + MLP_ADAPTER_SCALE * self.adapter(x)


def add_msa_adapters(encoder: ImageEncoderViT, ratio: float = 0.25) -> int:
    """Put a Space and an MLP adapter in every block of ``encoder`` and freeze everything else in it.

    Returns:
        the number of adapter parameters added.
    """
    if not isinstance(encoder, ImageEncoderViT):
        raise ValueError(f"adapter 'msa' needs SAM's ViT image encoder, not {type(encoder).__name__} (TinySAM)")
    added = 0
    for block in encoder.blocks:
        dim = block.attn.qkv.in_features
        block.attn.__class__ = AdaptedAttention
        block.attn.adapter = Adapter(dim, ratio, skip=True)
        block.mlp.__class__ = AdaptedMLP
        block.mlp.adapter = Adapter(dim, ratio, skip=False)
        added += sum(p.numel() for p in (*block.attn.adapter.parameters(), *block.mlp.adapter.parameters()))
    for name, parameter in encoder.named_parameters():
        parameter.requires_grad_(".adapter." in name)
    return added
