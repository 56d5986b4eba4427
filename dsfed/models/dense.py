"""Dense CNN segmenters (MONAI UNet and DynUNet, the nnU-Net architecture) behind the Segmenter interface."""

from __future__ import annotations

from monai.networks.nets import DynUNet, UNet
from torch import Tensor, nn

from dsfed.models.aliases import dedupe_state_dict
from dsfed.models.segmenter import Segmenter

__all__ = ["DenseSegmenter", "build_dynunet", "build_unet"]


class DenseSegmenter(Segmenter):
    """A full-resolution CNN: images resized to ``input_size``, standardised, logits resized to ``output_size``.

    Args:
        net: maps (B, 3, S, S) -> (B, C, S, S).
        standardise: (mean, std) applied to [0, 1] pixels; a pretrained encoder needs its own
            (EfficientNet-Lite: (127/255, 128/255)).
    """

    def __init__(self, net: nn.Module, num_classes: int, input_size: int, output_size: int,
                 standardise: tuple[float, float] = (0.5, 0.25)) -> None:
        super().__init__(num_classes, input_size, output_size, prompt="none")
        self.net = net
        self.mean, self.std = standardise
        dedupe_state_dict(self)

    def predict(self, images: Tensor, boxes: Tensor | None) -> Tensor:
        return self.net((images - self.mean) / self.std)


def build_unet(num_classes: int, channels: tuple[int, ...] = (16, 32, 64, 128, 256), num_res_units: int = 2) -> nn.Module:
    """MONAI ``UNet`` (residual units, instance norm), 2-D, 3 input channels."""
    return UNet(
        spatial_dims=2,
        in_channels=3,
        out_channels=num_classes,
        channels=channels,
        strides=(2,) * (len(channels) - 1),
        num_res_units=num_res_units,
        norm="instance",
    )


def build_dynunet(num_classes: int, filters: tuple[int, ...] = (16, 32, 64, 128, 256)) -> nn.Module:
    """MONAI ``DynUNet``: the nnU-Net architecture (3x3 convs, stride-2 stages, instance norm, leaky ReLU)."""
    depth = len(filters)
    return DynUNet(
        spatial_dims=2,
        in_channels=3,
        out_channels=num_classes,
        kernel_size=[3] * depth,
        strides=[1] + [2] * (depth - 1),
        upsample_kernel_size=[2] * (depth - 1),
        filters=list(filters),
        norm_name="instance",
        deep_supervision=False,
        res_block=True,
    )
