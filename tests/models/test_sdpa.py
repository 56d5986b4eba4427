"""SAM's ViT attention through SDPA gives the logits and gradients of segment-anything's own attention."""

from __future__ import annotations

import torch

from dsfed.models import build_model
from dsfed.models.sdpa import use_sdpa


def test_sdpa_attention_equals_the_official_attention_forward_and_backward() -> None:
    torch.manual_seed(0)
    model = build_model("sam_demo", num_classes=2, output_size=16, input_size=64)
    for name, p in model.named_parameters():   # rel-pos tables start at zero: give them values so the bias is tested
        if "rel_pos" in name:
            torch.nn.init.normal_(p, std=0.5)
    x = torch.rand(2, 3, 64, 64)
    reference = model(x)
    reference.square().mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    from segment_anything.modeling.image_encoder import Attention

    assert any(m.use_rel_pos for m in model.modules() if isinstance(m, Attention))   # the bias path is exercised
    assert use_sdpa(model) > 0
    out = model(x)
    out.square().mean().backward()
    assert torch.allclose(out, reference, atol=1e-5, rtol=1e-4)
    assert all(torch.allclose(p.grad, grads[n], atol=1e-5, rtol=1e-3) for n, p in model.named_parameters() if n in grads)
    assert use_sdpa(build_model("unet", num_classes=2, output_size=16)) == 0
