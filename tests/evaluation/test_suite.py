"""The evaluate stage's scoring: prompt-free and box-prompted models alike."""

from __future__ import annotations

import torch

from dsfed.config import parse_params
from dsfed.evaluation.suite import flops_per_image, inference_ms, score_on_tests
from dsfed.models import build_model
from tests.conftest import phantom_client


def test_a_box_prompted_model_is_scored_with_boxes_from_the_masks() -> None:
    """MedSAM-style models take the tight box of each ground-truth mask; ``model(images, None)`` used to crash."""
    torch.manual_seed(0)
    params = parse_params({"data": {"image_size": 64, "mask_size": 16}, "evaluate": {"bootstrap": 0}, "clients": {"a": phantom_client("site_a", n=4)}})
    model = build_model("sam_demo", num_classes=2, output_size=16, input_size=64, prompt="box").eval()
    images = torch.rand(3, 3, 64, 64)
    masks = torch.zeros(3, 2, 16, 16)
    masks[:, :, 4:12, 5:11] = 1
    summaries, per_image, logits = score_on_tests(model, {"a": (images, masks)}, params, torch.device("cpu"))
    assert logits["a"].shape == (3, 2, 16, 16) and 0.0 <= summaries["a"]["dice"] <= 1.0
    moved = masks.clone()
    moved[:, :, 4:12, 5:11], moved[:, :, 0:6, 0:6] = 0, 1
    _, _, other = score_on_tests(model, {"a": (images, moved)}, params, torch.device("cpu"))
    assert not torch.equal(other["a"], logits["a"])  # the boxes reach the model
    assert inference_ms(model, images, torch.device("cpu"), warmup=1, masks=masks) > 0


def test_flops_per_image_counts_one_forward_pass_and_leaves_the_model_as_it_was() -> None:
    images = torch.rand(3, 3, 64, 64)
    masks = torch.zeros(3, 2, 16, 16)
    masks[:, :, 4:10, 4:10] = 1
    counts = {}
    for name, prompt in (("sam_demo", "box"), ("sam_demo", "none"), ("unet", "none")):
        model = build_model(name, num_classes=2, output_size=16, input_size=64, prompt=prompt).eval()
        counts[name] = flops_per_image(model, images, masks)
        assert counts[name] == flops_per_image(model, images[1:], masks[1:])   # batch 1, the same on any image
        assert all(p.requires_grad for p in model.parameters())                # gradients switched back on
    assert counts["sam_demo"] > counts["unet"] > 1e6
