"""Medical-SAM-Adapter blocks (FedMSA): official keys unchanged, only adapters and the decoder train."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from dsfed.federated.local_keys import LocalKeys
from dsfed.models import build_model
from dsfed.models.adapters import FROZEN_BY_ADAPTERS


def test_adapters_add_keys_freeze_the_encoder_and_change_the_output() -> None:
    torch.manual_seed(0)
    plain = build_model("sam_demo", num_classes=1, output_size=16, input_size=64)
    torch.manual_seed(0)
    msa = build_model("sam_demo", num_classes=1, output_size=16, input_size=64, adapter="msa")
    plain_keys, msa_keys = set(plain.state_dict()), set(msa.state_dict())
    assert plain_keys < msa_keys and all(".adapter." in k for k in msa_keys - plain_keys)
    depth = len(msa.sam.image_encoder.blocks)
    assert len({k.rsplit(".adapter.", 1)[0] for k in msa_keys - plain_keys}) == 2 * depth  # attn + mlp per block
    trainable = {n for n, p in msa.named_parameters() if p.requires_grad}
    assert all(".adapter." in n or not n.startswith("sam.image_encoder.") for n in trainable)
    assert any(n.startswith("sam.mask_decoder.") for n in trainable) and "head.weight" in trainable
    frozen = LocalKeys(msa.frozen_keys)
    assert {k for k in msa_keys if frozen.is_local(k)} == {k for k in msa_keys if k.startswith("sam.image_encoder.") and ".adapter." not in k}
    assert msa.frozen_keys == (FROZEN_BY_ADAPTERS,) and plain.frozen_keys == ()
    msa.load_state_dict(plain.state_dict(), strict=False)  # same encoder weights: only the adapters differ
    images = torch.rand(2, 3, 64, 64)
    assert not torch.allclose(plain(images), msa(images))  # the adapters act (MSA's default, non-zero init)


def test_a_foundation_checkpoint_loads_around_the_adapters(tmp_path: Path) -> None:
    torch.manual_seed(1)
    foundation = build_model("sam_demo", num_classes=2, output_size=16, input_size=128)
    path = tmp_path / "f.safetensors"
    save_file({k: v.contiguous() for k, v in foundation.state_dict().items()}, str(path))
    msa = build_model("sam_demo", num_classes=2, output_size=16, input_size=64, checkpoint=path, adapter="msa")
    block = "sam.image_encoder.blocks.0.attn.qkv.weight"
    assert torch.equal(msa.state_dict()[block], foundation.state_dict()[block])
    assert msa.sam.image_encoder.pos_embed.shape[1] == 4  # resized from the 128 px foundation's 8x8 grid


def test_tinysam_and_unets_refuse_adapters() -> None:
    with pytest.raises(ValueError, match="ViT"):
        build_model("tinysam_demo", num_classes=1, output_size=16, input_size=64, adapter="msa")
    with pytest.raises(ValueError, match="adapters"):
        build_model("unet", num_classes=1, output_size=16, adapter="msa")
