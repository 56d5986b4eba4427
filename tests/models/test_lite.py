"""The ImageNet EfficientNet-Lite0 encoder in MONAI's FlexibleUNet (``unet_lite0``)."""

from __future__ import annotations

import pytest
import torch

from dsfed.generation.quality import efficientnet_lite0
from dsfed.models import build_model
from dsfed.models.lite import LITE_MEAN, LITE_STD, Lite0Encoder


def test_the_encoder_carries_the_imagenet_weights_and_features_of_the_flat_network() -> None:
    """Each of the encoder's 5 feature maps equals the flat ImageNet network's activation at that stride."""
    torch.manual_seed(0)
    flat = efficientnet_lite0()
    encoder = Lite0Encoder().eval()
    x = (torch.rand(2, 3, 128, 128) * 255 - LITE_MEAN) / LITE_STD
    with torch.no_grad():
        features = encoder(x)
        h = flat._swish(flat._bn0(flat._conv_stem(flat._conv_stem_padding(x))))
        strides = []
        for block in flat._blocks:
            h = block(h)
            strides.append(h)
    assert [f.shape[1] for f in features] == [16, 24, 40, 112, 320]
    by_shape = {tuple(t.shape): t for t in strides}  # the last block of each resolution and width
    for feature in features:
        assert torch.allclose(feature, by_shape[tuple(feature.shape)], atol=1e-5)
    assert not hasattr(encoder, "_fc")  # the classifier is dropped


def test_unet_lite0_trains_and_refuses_sizes_its_padding_cannot_take() -> None:
    model = build_model("unet_lite0", num_classes=1, output_size=32, input_size=64)
    logits = model(torch.rand(2, 3, 48, 48))
    assert logits.shape == (2, 1, 32, 32)
    logits.mean().backward()
    assert model.net.encoder._conv_stem.weight.grad is not None
    with pytest.raises(ValueError, match="multiple of 32"):
        build_model("unet_lite0", num_classes=1, output_size=32, input_size=80)


def test_the_encoders_imagenet_statistics_survive_training() -> None:
    """Frozen BN: training moves the encoder's BN scale and shift, never its running statistics; the decoder has
    no running statistics to average across hospitals."""
    model = build_model("unet_lite0", num_classes=1, output_size=32, input_size=64)
    encoder = model.net.encoder
    before = {k: v.clone() for k, v in encoder.state_dict().items() if "running" in k}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(2):
        loss = model(torch.rand(4, 3, 64, 64) * 3).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = encoder.state_dict()
    assert before and all(torch.equal(v, after[k]) for k, v in before.items())
    assert not torch.equal(encoder._bn0.weight.detach(), efficientnet_bn0_weight())
    assert not any("running" in k for k in model.net.decoder.state_dict())


def efficientnet_bn0_weight() -> torch.Tensor:
    return Lite0Encoder()._bn0.weight.detach()
