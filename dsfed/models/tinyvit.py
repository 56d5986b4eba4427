"""TinyViT-5M image encoder in the MobileSAM / TinySAM state-dict layout, for any input size divisible by 16."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from segment_anything.modeling.common import LayerNorm2d
from torch import Tensor, nn

__all__ = ["TinyViT"]


class Conv2d_BN(nn.Sequential):  # noqa: N801  (official class name; children ``c`` and ``bn`` are state-dict keys)
    """Bias-free convolution followed by batch norm: ``(B, a, H, W) -> (B, b, H', W')``."""

    def __init__(
        self,
        a: int,
        b: int,
        ks: int = 1,
        stride: int = 1,
        pad: int = 0,
        groups: int = 1,
        bn_weight_init: float = 1.0,
    ) -> None:
        super().__init__()
        self.add_module("c", nn.Conv2d(a, b, ks, stride, pad, groups=groups, bias=False))
        bn = nn.BatchNorm2d(b)
        nn.init.constant_(bn.weight, bn_weight_init)
        nn.init.constant_(bn.bias, 0.0)
        self.add_module("bn", bn)


class PatchEmbed(nn.Module):
    """Two stride-2 3x3 convolutions: ``(B, in_chans, H, W) -> (B, embed_dim, H/4, W/4)``."""

    def __init__(self, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        n = embed_dim
        self.seq = nn.Sequential(
            Conv2d_BN(in_chans, n // 2, 3, 2, 1),
            nn.GELU(),
            Conv2d_BN(n // 2, n, 3, 2, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_chans, H, W) -> (B, embed_dim, H/4, W/4)``."""
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual block (1x1 expand, 3x3 depthwise, 1x1 project): ``(B, C, H, W) -> (B, C, H, W)``."""

    def __init__(self, dim: int, expand_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = Conv2d_BN(dim, hidden, ks=1)
        self.act1 = nn.GELU()
        self.conv2 = Conv2d_BN(hidden, hidden, ks=3, stride=1, pad=1, groups=hidden)
        self.act2 = nn.GELU()
        self.conv3 = Conv2d_BN(hidden, dim, ks=1, bn_weight_init=0.0)
        self.act3 = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``."""
        y = self.act1(self.conv1(x))
        y = self.act2(self.conv2(y))
        y = self.conv3(y)
        return self.act3(y + x)


class PatchMerging(nn.Module):
    """1x1 conv, 3x3 depthwise conv (stride 2, or 1 before the last stage), 1x1 conv.

    ``(B, dim, H, W) -> (B, out_dim, H/stride, W/stride)``. The official code picks stride 1 when
    ``out_dim`` is 320, 448 or 576 (the last width of TinyViT-5M/11M/21M); here the caller says so
    explicitly, which gives the same layers for every official configuration.
    """

    def __init__(self, dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.act = nn.GELU()
        self.conv1 = Conv2d_BN(dim, out_dim, 1, 1, 0)
        self.conv2 = Conv2d_BN(out_dim, out_dim, 3, stride, 1, groups=out_dim)
        self.conv3 = Conv2d_BN(out_dim, out_dim, 1, 1, 0)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, dim, H, W) -> (B, out_dim, H', W')``."""
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))
        return self.conv3(x)


class ConvLayer(nn.Module):
    """Stage 0: MBConv blocks then an optional patch merging, ``(B, C, H, W) -> (B, C', H', W')``."""

    def __init__(self, dim: int, depth: int, expand_ratio: float, downsample: PatchMerging | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand_ratio) for _ in range(depth))
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, C', H', W')``."""
        for blk in self.blocks:
            x = blk(x)
        if self.downsample is not None:
            x = self.downsample(x)
        return x


class Mlp(nn.Module):
    """Pre-norm two-layer MLP on tokens: ``(B, N, C) -> (B, N, C)``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        """``(B, N, C) -> (B, N, C)``."""
        return self.fc2(self.act(self.fc1(self.norm(x))))


def _bias_index(window: tuple[int, int]) -> Tensor:
    """``(N, N)`` long table, ``N = wh*ww``: for tokens i, j the id of the offset ``(|dy|, |dx|)``.

    Ids follow the official first-seen enumeration, which for a rectangular window is
    ``|dy| * ww + |dx|`` (every offset already occurs in the row of token 0).
    """
    wh, ww = window
    ys, xs = torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    return (ys[:, None] - ys[None, :]).abs() * ww + (xs[:, None] - xs[None, :]).abs()


class Attention(nn.Module):
    """Pre-norm multi-head attention with learned relative-offset biases inside one window.

    ``(B', N, C) -> (B', N, C)`` with ``N = window_h * window_w``. ``attention_biases`` has shape
    ``(num_heads, window_h * window_w)`` and depends only on the window, not on the image size.
    ``attention_bias_idxs`` is a non-persistent buffer (absent from state dicts, as in the official
    code); the bias is gathered on every call, so there is no cached ``ab`` to go stale after
    ``load_state_dict`` or ``.to(device)``.
    """

    attention_bias_idxs: Tensor

    def __init__(
        self, dim: int, key_dim: int, num_heads: int, resolution: tuple[int, int], attn_ratio: int = 1
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.scale = key_dim**-0.5
        self.d = int(attn_ratio * key_dim)
        self.dh = self.d * num_heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, self.dh + 2 * key_dim * num_heads)
        self.proj = nn.Linear(self.dh, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, resolution[0] * resolution[1]))
        self.register_buffer("attention_bias_idxs", _bias_index(resolution), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """``(B', N, C) -> (B', N, C)``."""
        b, n, _ = x.shape
        qkv = self.qkv(self.norm(x)).view(b, n, self.num_heads, -1)
        q, k, v = qkv.split([self.key_dim, self.key_dim, self.d], dim=3)
        q, k, v = (t.permute(0, 2, 1, 3) for t in (q, k, v))  # (B', heads, N, d)
        bias = self.attention_biases[:, self.attention_bias_idxs]  # (heads, N, N)
        # explicit softmax(q k^T * scale + bias) v: bit-identical to the official code (windows are at
        # most 14x14 = 196 tokens, so the (B', heads, N, N) matrix is small)
        attn = ((q @ k.transpose(-2, -1)) * self.scale + bias).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, self.dh))


class TinyViTBlock(nn.Module):
    """Windowed attention, depthwise local conv, MLP: ``(B, H*W, C) -> (B, H*W, C)`` on an H x W grid.

    Grids that are not a multiple of the window are zero-padded on the bottom/right before the
    attention (pre-norm, unmasked, as in the official code) and cropped afterwards.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, mlp_ratio: float, local_conv_size: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.window_size = window_size
        self.attn = Attention(dim, dim // num_heads, num_heads, (window_size, window_size), attn_ratio=1)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.local_conv = Conv2d_BN(dim, dim, ks=local_conv_size, stride=1, pad=local_conv_size // 2, groups=dim)

    def forward(self, x: Tensor, hw: tuple[int, int]) -> Tensor:
        """``x`` (B, H*W, C) tokens in row-major order of the ``hw = (H, W)`` grid -> (B, H*W, C)."""
        h, w = hw
        b, n, c = x.shape
        ws = self.window_size
        if h == ws and w == ws:
            a = self.attn(x)
        else:
            g = x.view(b, h, w, c)
            pad_b, pad_r = (ws - h % ws) % ws, (ws - w % ws) % ws
            if pad_b or pad_r:
                g = F.pad(g, (0, 0, 0, pad_r, 0, pad_b))
            ph, pw = h + pad_b, w + pad_r
            nh, nw = ph // ws, pw // ws
            win = g.view(b, nh, ws, nw, ws, c).transpose(2, 3).reshape(b * nh * nw, ws * ws, c)
            win = self.attn(win)
            g = win.view(b, nh, nw, ws, ws, c).transpose(2, 3).reshape(b, ph, pw, c)
            a = g[:, :h, :w].reshape(b, n, c)
        x = x + a
        x = self.local_conv(x.transpose(1, 2).reshape(b, c, h, w)).view(b, c, n).transpose(1, 2)
        return x + self.mlp(x)


class BasicLayer(nn.Module):
    """Stages 1-3: TinyViT blocks then an optional patch merging, ``(B, C, H, W) -> (B, C', H', W')``."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        local_conv_size: int,
        downsample: PatchMerging | None,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TinyViTBlock(dim, num_heads, window_size, mlp_ratio, local_conv_size) for _ in range(depth)
        )
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, C', H', W')``."""
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)  # (B, H*W, C)
        for blk in self.blocks:
            t = blk(t, (h, w))
        x = t.transpose(1, 2).reshape(b, c, h, w)
        if self.downsample is not None:
            x = self.downsample(x)
        return x


class TinyViT(nn.Module):
    """TinyViT image encoder with SAM's neck: ``(B, 3, S, S) -> (B, out_chans, S/16, S/16)``.

    Module names and parameter shapes follow ``mobile_sam/modeling/tiny_vit_sam.py`` so that the
    ``image_encoder.*`` entries of ``mobile_sam.pt`` and ``tinysam_42.3.pth`` load strictly. The
    classifier ``norm_head``/``head`` exist only for that reason and are not used by :meth:`forward`.
    Unlike the official code the output grid is derived from ``img_size`` instead of fixed at 64x64;
    no weight depends on ``img_size`` (attention biases depend on the window only), so one state
    dict serves every size. Total stride 16: /4 patch embed, /2 after stage 0, /2 after stage 1,
    /1 after stage 2.
    """

    def __init__(
        self,
        img_size: int = 1024,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dims: Sequence[int] = (64, 128, 160, 320),
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (2, 4, 5, 10),
        window_sizes: Sequence[int] = (7, 7, 14, 7),
        mlp_ratio: float = 4.0,
        mbconv_expand_ratio: float = 4.0,
        local_conv_size: int = 3,
        out_chans: int = 256,
    ) -> None:
        super().__init__()
        if img_size <= 0 or img_size % 16:
            raise ValueError(f"img_size must be a positive multiple of 16, got {img_size}")
        n = len(depths)
        if n != 4 or not (len(embed_dims) == len(num_heads) == len(window_sizes) == n):
            raise ValueError("embed_dims, depths, num_heads and window_sizes must each have 4 entries")
        self.img_size = img_size
        self.in_chans = in_chans
        self.out_chans = out_chans

        self.patch_embed = PatchEmbed(in_chans, embed_dims[0])
        self.layers = nn.ModuleList()
        for i in range(n):
            downsample = None
            if i < n - 1:
                # the merging into the last stage keeps the resolution (official: out_dim in 320/448/576)
                stride = 1 if i == n - 2 else 2
                downsample = PatchMerging(embed_dims[i], embed_dims[i + 1], stride)
            layer: nn.Module
            if i == 0:
                layer = ConvLayer(embed_dims[0], depths[0], mbconv_expand_ratio, downsample)
            else:
                layer = BasicLayer(
                    embed_dims[i], depths[i], num_heads[i], window_sizes[i], mlp_ratio, local_conv_size, downsample
                )
            self.layers.append(layer)

        self.norm_head = nn.LayerNorm(embed_dims[-1])
        self.head: nn.Module = nn.Linear(embed_dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)  # before the neck, as in the official code
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    @property
    def grid_size(self) -> int:
        """Side of the output embedding grid, ``img_size // 16``."""
        return self.img_size // 16

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_chans, S, S)`` normalised pixels, ``S = img_size`` -> ``(B, out_chans, S/16, S/16)``."""
        if x.ndim != 4 or x.shape[1] != self.in_chans or x.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(
                f"expected input (B, {self.in_chans}, {self.img_size}, {self.img_size}), got {tuple(x.shape)}"
            )
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        return self.neck(x)
