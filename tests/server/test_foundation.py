"""The task-agnostic foundations: a multi-task corpus, a foundation SAM with a union head, a distilled student."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from dsfed.generation.corpus import multitask_corpus, union_classes
from dsfed.heads import checkpoint_classes
from dsfed.models import build_model
from dsfed.server.foundation import FoundationSpec, pretrain_foundation
from dsfed.server.multitask import TaskView


def test_multitask_corpus_lays_each_task_into_the_union_classes() -> None:
    parts = multitask_corpus(3, 64, progress=False)
    assert [p.task for p in parts] == ["fundus", "skin", "polyp"]
    assert union_classes(("fundus", "skin", "polyp")) == ("optic_disc", "optic_cup", "lesion", "polyp")
    assert [p.channels for p in parts] == [(0, 1), (2,), (3,)]
    assert [p.masks.shape[1] for p in parts] == [2, 1, 1] and all(p.images.shape == (3, 3, 64, 64) for p in parts)
    again = multitask_corpus(2, 64, progress=False)  # sample i depends only on (seed, task, i)
    assert all(np.array_equal(a.images, b.images[:2]) for a, b in zip(again, parts, strict=True))


def test_foundation_and_student_record_their_classes_and_train(tmp_path: Path) -> None:
    spec = FoundationSpec(corpus_n=12, val_n=4, epochs=2, batch_size=4, input_size=64, mask_size=32, image_size=64)
    sam = pretrain_foundation(tmp_path, spec, progress=False)
    assert sam["classes"] == ["optic_disc", "optic_cup", "lesion", "polyp"]
    assert set(sam["best_val_dice_per_task"]) == {"fundus", "skin", "polyp"} and len(sam["history"]) == 2
    weights = tmp_path / "sam_demo.safetensors"
    assert checkpoint_classes(weights) == sam["classes"]
    student = pretrain_foundation(tmp_path, FoundationSpec(model="tinysam_demo", corpus_n=12, val_n=4, epochs=1, batch_size=4,
                                                           input_size=64, mask_size=32, image_size=64, teacher=str(weights)),
                                  progress=False)
    assert student["history"][0]["kd"] > 0 and json.loads((tmp_path / "tinysam_demo.json").read_text())["params"]["spec"]["teacher"]
    # a one-class skin task takes the student's trained lesion channel by name
    full = build_model("tinysam_demo", num_classes=4, output_size=32, input_size=64, checkpoint=tmp_path / "tinysam_demo.safetensors")
    skin = build_model("tinysam_demo", num_classes=1, output_size=32, input_size=64, checkpoint=tmp_path / "tinysam_demo.safetensors",
                       classes=("lesion",))
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(skin.eval()(images), TaskView(full.eval(), [2])(images), atol=1e-5)
