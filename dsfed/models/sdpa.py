"""SAM's ViT attention through ``torch.nn.functional.scaled_dot_product_attention``: the same function, fused kernels.

segment-anything's ``Attention`` forms the (B*heads, N, N) score matrix, adds the decomposed relative-position
bias and applies softmax by hand; SDPA does it in one fused kernel (memory-efficient attention on a GPU takes the
bias as ``attn_mask``), so training at 1024 px holds less in memory and moves fewer bytes. :func:`use_sdpa`
swaps the forward of every such module in a model; the weights and the state dict do not change.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import Attention, add_decomposed_rel_pos
from torch import Tensor, nn

__all__ = ["sdpa_attention_forward", "use_sdpa"]


def sdpa_attention_forward(self: Attention, x: Tensor) -> Tensor:
    """``Attention.forward`` with SDPA: (B, H, W, C) -> (B, H, W, C)."""
    b, h, w, _ = x.shape
    qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)  # (3, B, heads, N, d)
    q, k, v = qkv.unbind(0)
    bias = None
    if self.use_rel_pos:   # the decomposed relative-position terms alone, as the additive mask SDPA takes
        zeros = torch.zeros(b * self.num_heads, h * w, h * w, dtype=q.dtype, device=q.device)
        bias = add_decomposed_rel_pos(zeros, q.reshape(b * self.num_heads, h * w, -1), self.rel_pos_h, self.rel_pos_w, (h, w), (h, w))
        bias = bias.view(b, self.num_heads, h * w, h * w)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)  # (B, heads, N, d)
    out = out.view(b, self.num_heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)
    return self.proj(out)


def use_sdpa(model: nn.Module) -> int:
    """Run every segment-anything ViT ``Attention`` in ``model`` through SDPA; returns how many were switched."""
    switched = 0
    for module in model.modules():
        if isinstance(module, Attention):
            module.forward = types.MethodType(sdpa_attention_forward, module)  # type: ignore[method-assign]
            switched += 1
    return switched
