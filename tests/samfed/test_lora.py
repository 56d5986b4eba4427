"""LoRA-SAM teacher (peft): what trains, adapter files, merging back to the official layout, the ViT-B count."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file
from segment_anything import sam_model_registry
from torch import Tensor
from torch.utils.data import Dataset

from dsfed.errors import DsfedError
from dsfed.federated.local_keys import LocalKeys
from dsfed.heads import safetensors_header
from dsfed.models import build_model
from dsfed.models.checkpoint import load_weights
from dsfed.models.sam import SamSegmenter
from dsfed.samfed.lora import (
    FROZEN_BY_LORA,
    LoraSpec,
    adapter_state,
    add_lora,
    load_adapter,
    lora_layers,
    merge_lora,
    save_adapter,
    train_teacher,
)
from dsfed.training.losses import BCEDiceLoss

SIZE, OUT = 64, 32
# scale alpha / r = 4, both attention Linear layers, dropout on: a merge that forgot the scale, a target
# that did not take, or a spec that did not round-trip shows
SPEC = LoraSpec(rank=2, alpha=8.0, targets=("qkv", "proj"), dropout=0.1)


class RandomPairs(Dataset[dict[str, Tensor]]):
    """n random images (3, S, S) in [0, 1] with random binary masks (1, Sm, Sm)."""

    def __init__(self, n: int, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.images = torch.rand(n, 3, SIZE, SIZE, generator=gen)
        self.masks = (torch.rand(n, 1, OUT, OUT, generator=gen) > 0.7).float()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"image": self.images[i], "mask": self.masks[i]}


def base(name: str = "sam_demo", seed: int = 0) -> SamSegmenter:
    torch.manual_seed(seed)
    model = build_model(name, num_classes=1, output_size=OUT, input_size=SIZE)
    assert isinstance(model, SamSegmenter)
    return model


def train(model: SamSegmenter, epochs: int = 2, seed: int = 0) -> dict[str, float]:
    return train_teacher(model, RandomPairs(4), epochs=epochs, batch_size=2, lr=1e-2,
                         loss_fn=BCEDiceLoss(pos_weight=1.0, dice=1.0), device="cpu", seed=seed, progress=False)


def outputs(model: SamSegmenter) -> Tensor:
    with torch.no_grad():
        return model.eval()(torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(7)))


@pytest.fixture(scope="module")
def trained() -> SamSegmenter:
    """sam_demo (seed 0) with SPEC, trained for 4 steps; tests must not change it."""
    model = add_lora(base(), SPEC)
    train(model)
    return model.eval()


def test_add_lora_freezes_the_base_and_keeps_the_output() -> None:
    plain = base()
    before = outputs(plain)
    torch.manual_seed(3)
    model = add_lora(plain, SPEC)
    depth = len(model.sam.image_encoder.blocks)
    assert sorted(lora_layers(model)) == sorted(f"sam.image_encoder.blocks.{i}.attn.{t}" for i in range(depth) for t in ("qkv", "proj"))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters()
                         if ".lora_" in n or n.startswith(("sam.mask_decoder.", "head."))}
    assert all(n.startswith("sam.image_encoder.") for n in trainable if ".lora_" in n)
    assert model.frozen_keys == (FROZEN_BY_LORA,)
    frozen = LocalKeys(model.frozen_keys)  # the federated core's view: what never travels is the base SAM
    assert set(adapter_state(model)) == {k for k in model.state_dict() if not frozen.is_local(k)}
    assert torch.equal(outputs(model), before)  # B starts at zero
    again = base()
    torch.manual_seed(3)
    add_lora(again, SPEC)
    assert all(torch.equal(v, adapter_state(again)[k]) for k, v in adapter_state(model).items())  # seeded init


def test_training_moves_only_lora_decoder_and_head() -> None:
    model = add_lora(base(), SPEC)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    stats = train(model)
    assert stats["steps"] == 4 and stats["samples"] == 8
    now = model.state_dict()
    frozen = re.compile(FROZEN_BY_LORA)
    base_keys = [k for k in start if frozen.search(k)]
    assert any(k.startswith("sam.prompt_encoder.") for k in base_keys) and any(".base_layer." in k for k in base_keys)
    assert [k for k in base_keys if not torch.equal(start[k], now[k])] == []
    lora_b = [k for k in start if ".lora_B." in k]
    assert len(lora_b) == 2 * len(model.sam.image_encoder.blocks)
    assert [k for k in lora_b if torch.equal(start[k], now[k])] == []
    assert not torch.equal(start["sam.mask_decoder.output_upscaling.0.weight"], now["sam.mask_decoder.output_upscaling.0.weight"])
    # the same seeds give the same teacher
    torch.manual_seed(0)
    twin = add_lora(base(), SPEC)
    train(twin)
    assert all(torch.equal(v, adapter_state(twin)[k]) for k, v in adapter_state(model).items())


def test_tinysam_batchnorm_statistics_stay_frozen() -> None:
    model = add_lora(base("tinysam_demo"), LoraSpec(targets=("qkv",)))
    assert lora_layers(model)
    buffers = {k: v.clone() for k, v in model.state_dict().items() if "running_" in k}
    assert buffers and all(k.startswith("sam.image_encoder.") for k in buffers)
    train(model, epochs=1)
    assert [k for k, v in buffers.items() if not torch.equal(v, model.state_dict()[k])] == []


def test_adapter_round_trip(trained: SamSegmenter, tmp_path: Path) -> None:
    path = save_adapter(tmp_path / "teacher.safetensors", trained, SPEC, metadata={"classes": '["polyp"]'})
    _, meta = safetensors_header(path)
    assert meta == {"classes": '["polyp"]', "rank": "2", "alpha": "8.0", "targets": '["qkv", "proj"]', "dropout": "0.1"}
    saved = load_file(str(path))
    assert set(saved) == set(adapter_state(trained))
    assert not any(k.startswith("sam.prompt_encoder.") or ".base_layer." in k for k in saved)
    fresh = load_adapter(base(), path)  # the same base SAM, built from the same seed
    assert torch.equal(outputs(fresh), outputs(trained))
    state, expected = adapter_state(fresh), adapter_state(trained)
    assert state.keys() == expected.keys() and all(torch.equal(state[k], expected[k]) for k in state)
    assert [n for n, p in fresh.named_parameters() if p.requires_grad] == [n for n, p in trained.named_parameters() if p.requires_grad]


def test_load_adapter_refuses_files_that_do_not_fit(trained: SamSegmenter, tmp_path: Path) -> None:
    path = save_adapter(tmp_path / "teacher.safetensors", trained, SPEC)
    _, meta = safetensors_header(path)
    state = load_file(str(path))
    dropped = sorted(state)[0]
    short = tmp_path / "short.safetensors"
    save_file({k: v for k, v in state.items() if k != dropped}, str(short), metadata=meta)
    with pytest.raises(DsfedError, match=re.escape(f"{short}: does not fit")) as info:
        load_adapter(base(), short)
    assert "1 missing" in str(info.value) and dropped in str(info.value) and "\n" not in str(info.value)
    extra = tmp_path / "extra.safetensors"
    save_file({**state, "sam.image_encoder.pos_embed": torch.zeros(1)}, str(extra), metadata=meta)
    with pytest.raises(DsfedError, match="1 unexpected"):
        load_adapter(base(), extra)
    bare = tmp_path / "bare.safetensors"
    save_file(state, str(bare))
    with pytest.raises(DsfedError, match=re.escape(f"{bare}: not a LoRA adapter file")):
        load_adapter(base(), bare)
    with pytest.raises(DsfedError, match="does not exist"):
        load_adapter(base(), tmp_path / "absent.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(DsfedError, match=re.escape(f"{junk}: cannot read adapter file")):
        load_adapter(base(), junk)


def test_merge_lora_gives_the_official_layout_and_the_same_outputs(trained: SamSegmenter) -> None:
    adapted = outputs(trained)
    plain = base(seed=5)  # other weights: every one must come from the merged model
    assert (adapted - outputs(plain)).abs().max() > 1e-3
    merged = merge_lora(trained)
    assert lora_layers(merged) == {} and lora_layers(trained)  # the adapted model is left as it was
    assert not hasattr(merged.sam.image_encoder, "peft_config") and merged.frozen_keys == ()
    assert all(p.requires_grad for p in merged.parameters())
    # float32 state tolerance: x (W + s B A)^T and x W^T + s (x A^T) B^T differ by rounding only
    torch.testing.assert_close(outputs(merged), adapted, rtol=1e-5, atol=1e-5)
    assert list(merged.state_dict()) == list(plain.state_dict())
    load_weights(plain, merged.state_dict(), strict=True)
    assert torch.equal(outputs(plain), outputs(merged))
    no_scale = merged.state_dict()["sam.image_encoder.blocks.0.attn.qkv.weight"]
    layer = lora_layers(trained)["sam.image_encoder.blocks.0.attn.qkv"]
    base_weight = trained.state_dict()["sam.image_encoder.blocks.0.attn.qkv.base_layer.weight"]
    delta = layer.lora_B["default"].weight @ layer.lora_A["default"].weight  # type: ignore[index]
    torch.testing.assert_close(no_scale, base_weight + 4.0 * delta)  # alpha / r = 8 / 2


def test_unknown_target_is_one_line_naming_target_and_model() -> None:
    with pytest.raises(DsfedError, match=r"LoRA target 'qkvv' matches no Linear layer .*ImageEncoderViT.*qkv") as info:
        add_lora(base(), LoraSpec(targets=("qkv", "qkvv")))
    assert "\n" not in str(info.value)
    model = add_lora(base(), LoraSpec())
    with pytest.raises(DsfedError, match="already has adapters"):
        add_lora(model, LoraSpec())


def test_sam_vit_b_official_layout_lora_counts() -> None:
    torch.manual_seed(0)
    official: Any = sam_model_registry["vit_b"]()  # segment-anything's own builder: the official key layout
    model = build_model("sam_vit_b", num_classes=1, output_size=64)
    assert isinstance(model, SamSegmenter)
    official_keys = list(official.state_dict())
    load_weights(model.sam, official.state_dict(), strict=True)
    del official
    rank, dim = 4, 768
    decoder = sum(p.numel() for p in model.sam.mask_decoder.parameters())
    head = sum(p.numel() for p in model.head.parameters())
    add_lora(model, LoraSpec(rank=rank, targets=("qkv",)))
    layers = lora_layers(model)
    assert len(layers) == len(model.sam.image_encoder.blocks) == 12
    assert model.num_parameters(trainable_only=True) == 12 * rank * (dim + 3 * dim) + decoder + head
    assert decoder == 4_058_340 and head == 5  # SAM's mask decoder; 4 mask tokens -> 1 class
    merged = merge_lora(model)  # B = 0: the official weights come back under their own keys
    assert list(merged.sam.state_dict()) == official_keys
