"""The real SAM-Fed configuration (scenarios/samfed_isic/params.yaml, HSSF's ISIC-2018 protocol) parses, and its
teacher path works end to end on an official-layout SAM ViT-B checkpoint: strict load, LoRA on the scenario's
targets, the adapter file a client receives.

The stand-in checkpoint is segment-anything's own ViT-B builder (random weights, the official key layout), saved
as ``sam_vit_b_01ec64.pth``, as tests/models/test_models.py and tests/test_preset.py do.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch
from segment_anything import sam_model_registry

from dsfed.config import load_params
from dsfed.models.checkpoint import CheckpointError
from dsfed.models.sam import SamSegmenter
from dsfed.samfed.lora import LoraSpec, adapter_state, add_lora, lora_layers, save_adapter
from dsfed.samfed.server import build_teacher_base, teacher_factory
from dsfed.samfed.settings import SamFedConfig
from tests.conftest import REPO

SCENARIO = REPO / "scenarios/samfed_isic/params.yaml"
# The scenario's teacher runs at 512 px; the test runs it at 64 px. Both resize the checkpoint's 64 x 64 position
# embedding and the global blocks' relative-position tables (512: to 32 x 32, 64: to 4 x 4) through the same code,
# so the strict load is the same; only the forward passes get cheap (ViT-B at 512 px takes seconds per image on CPU).
SMALL = 64
CPU = torch.device("cpu")


def _teacher_at(cfg: SamFedConfig, checkpoint: Path) -> SamFedConfig:
    """A copy of the scenario's samfed section whose teacher reads ``checkpoint`` at SMALL px (LoRA, model as given)."""
    teacher = cfg.teacher.model_copy(update={"checkpoint": checkpoint, "input_size": SMALL})
    return cfg.model_copy(update={"teacher": teacher})


def _spec(cfg: SamFedConfig) -> LoraSpec:
    """The LoRA spec samfed_teacher builds from the config (dsfed.samfed.server.train_teacher_stage)."""
    lora = cfg.teacher.lora
    return LoraSpec(rank=lora.rank, alpha=lora.alpha, targets=tuple(lora.targets), dropout=lora.dropout)


def test_the_scenario_parses_and_enables_samfed() -> None:
    params = load_params(SCENARIO, check_paths=False)
    cfg = params.samfed
    assert cfg.enabled
    assert params.federated.methods == {}   # DSFedMed idle: only SAM-Fed's stages have work
    assert (cfg.data.classes, cfg.data.image_size, cfg.data.mask_size, cfg.data.holdout) == (["lesion"], 384, 384, None)
    public = cfg.public_set.source
    assert list(cfg.public) == ["isic_public"] and public.kind == "isic" and cfg.public_set.labels == "full"
    assert list(cfg.clients) == ["domain1", "domain2", "domain3", "domain4"]
    assert all(c.labels == "test_only" and c.source.kind == "isic" and c.source.partition is None for c in cfg.clients.values())
    folders = [str(c.source.path) for c in (cfg.public_set, *cfg.clients.values())]
    assert len(set(folders)) == 5   # one folder per set: HSSF's split lists, materialised
    t = cfg.teacher
    assert (t.model, t.input_size, t.checkpoint) == ("sam_vit_b", 512, Path("data/pretrained/sam_vit_b_01ec64.pth"))
    assert t.checkpoint is not None and t.checkpoint.parent == params.federated.pretrained_dir   # samfed_teacher's DVC dep
    assert (t.lora.rank, t.lora.alpha, t.lora.targets) == (4, 4.0, ["qkv"])
    assert (cfg.rounds, cfg.init.epochs, cfg.local, cfg.min_clients) == (200, 20, {"epochs": 1, "batch_size": 4}, 4)
    assert {cfg.architecture_of(v, c) for v in cfg.variants for c in cfg.clients} <= set(cfg.architectures)
    assert cfg.variants["samfed"].aggregation == "fedavg" and {cfg.architecture_of("samfed", c) for c in cfg.clients} == {"nnunet"}
    hetero = cfg.variants["samfed_hetero"]   # HSSF's clients ResNet-18, 18, 34, 34 as the registry's nearest
    assert (hetero.aggregation, hetero.rc_epochs, hetero.rf_epochs, hetero.pseudo) == ("rcrf", 4, 4, "agreement")
    assert [cfg.architecture_of("samfed_hetero", c) for c in cfg.clients] == ["unet", "unet", "nnunet", "nnunet"]


def test_the_real_teacher_loads_strictly_takes_lora_and_ships_its_adapter(tmp_path: Path) -> None:
    cfg = load_params(SCENARIO, check_paths=False).samfed
    torch.manual_seed(0)
    official: dict[str, Any] = sam_model_registry["vit_b"]().state_dict()   # segment-anything's builder: the official layout
    checkpoint = tmp_path / "sam_vit_b_01ec64.pth"
    torch.save(official, checkpoint)
    small = _teacher_at(cfg, checkpoint)

    base = build_teacher_base(small, CPU)
    loaded = base.sam.state_dict()
    assert list(loaded) == list(official)   # strict: every key of the file, nothing else
    assert loaded["image_encoder.pos_embed"].shape == (1, SMALL // 16, SMALL // 16, 768)
    resized = {k for k, v in official.items() if v.shape != loaded[k].shape}
    assert resized == {"image_encoder.pos_embed"} | {f"image_encoder.blocks.{i}.attn.rel_pos_{a}" for i in (2, 5, 8, 11) for a in "hw"}
    assert all(torch.equal(loaded[k], v) for k, v in official.items() if k not in resized)   # the rest is the file's, as is

    # a checkpoint lacking one key (the base weight of a LoRA target) is refused, naming the file and the key
    dropped = "image_encoder.blocks.3.attn.qkv.weight"
    broken = tmp_path / "broken.pth"
    torch.save({k: v for k, v in official.items() if k != dropped}, broken)
    with pytest.raises(CheckpointError, match=re.escape(f"{broken}: does not fit")) as info:
        build_teacher_base(_teacher_at(cfg, broken), CPU)
    assert f"1 missing [{dropped}]" in str(info.value) and "\n" not in str(info.value)
    del official

    spec = _spec(cfg)
    torch.manual_seed(1)
    teacher = add_lora(base, spec)
    assert sorted(lora_layers(teacher)) == sorted(f"sam.image_encoder.blocks.{i}.attn.qkv" for i in range(12))
    decoder = sum(p.numel() for p in teacher.sam.mask_decoder.parameters())
    head = sum(p.numel() for p in teacher.head.parameters())
    assert teacher.num_parameters(trainable_only=True) == 12 * 4 * (768 + 3 * 768) + decoder + head

    # what training would change (LoRA B starts at zero), so the round trip carries real values
    with torch.no_grad():
        gen = torch.Generator().manual_seed(2)
        for p in teacher.parameters():
            if p.requires_grad:
                p.add_(0.02 * torch.randn(p.shape, generator=gen))
    adapter = save_adapter(tmp_path / "adapter.safetensors", teacher, spec)
    received = teacher_factory(small, CPU)(adapter)   # a client: its own base SAM from the checkpoint, plus the adapter
    assert isinstance(received, SamSegmenter)
    sent, got = adapter_state(teacher), adapter_state(received)
    assert sent.keys() == got.keys() and all(torch.equal(sent[k], got[k]) for k in sent)
    images = torch.rand(2, 3, SMALL, SMALL, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected, actual = teacher.eval()(images), received.eval()(images)
    assert expected.shape == (2, 1, 384, 384)
    assert torch.equal(actual, expected)
