"""Model registry: shapes, prompt modes, equivalence with segment-anything's decoder, official-layout loading."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from segment_anything import sam_model_registry

from dsfed.models import build_model, model_names
from dsfed.models.checkpoint import CheckpointError, read_state_dict
from dsfed.models.prompts import boxes_from_masks
from dsfed.models.sam import SamSegmenter

# [name, options, input shape, expected output shape] -- one row per variant
SHAPES = [
    ["sam_demo", {"num_classes": 2, "output_size": 64}, (2, 3, 128, 128), (2, 2, 64, 64)],
    ["sam_demo", {"num_classes": 1, "output_size": 32, "input_size": 128}, (1, 3, 96, 96), (1, 1, 32, 32)],
    ["tinysam_demo", {"num_classes": 2, "output_size": 64}, (2, 3, 128, 128), (2, 2, 64, 64)],
    ["tinysam_demo", {"num_classes": 3, "output_size": 64, "input_size": 128}, (2, 3, 256, 256), (2, 3, 64, 64)],
    ["unet", {"num_classes": 2, "output_size": 64}, (2, 3, 128, 128), (2, 2, 64, 64)],
    ["nnunet", {"num_classes": 2, "output_size": 64, "input_size": 64}, (3, 3, 128, 128), (3, 2, 64, 64)],
    ["unet_lite0", {"num_classes": 2, "output_size": 64, "input_size": 64}, (2, 3, 128, 128), (2, 2, 64, 64)],
]


def test_registry_names() -> None:
    from dsfed.models.names import MODEL_NAMES  # torch-free copy used by config validation

    assert tuple(model_names()) == MODEL_NAMES
    assert model_names() == ["nnunet", "sam_demo", "sam_vit_b", "sam_vit_h", "sam_vit_l", "tinysam", "tinysam_demo", "unet",
                             "unet_lite0"]
    with pytest.raises(KeyError, match="unknown model 'sam_vit_x'"):
        build_model("sam_vit_x", num_classes=1, output_size=64)


@pytest.mark.parametrize(("name", "options", "input_shape", "expected"), SHAPES)
def test_shapes(name: str, options: dict[str, int], input_shape: tuple[int, ...], expected: tuple[int, ...]) -> None:
    model = build_model(name, **options).eval()
    with torch.no_grad():
        assert tuple(model(torch.rand(input_shape)).shape) == expected


@pytest.mark.parametrize("name", ["sam_demo", "tinysam_demo", "unet", "nnunet"])
def test_training_reaches_every_used_parameter(name: str) -> None:
    """Sam.forward is no_grad; our segmenters train through the submodules, so every used weight gets a gradient."""
    model = build_model(name, num_classes=2, output_size=32, input_size=64 if "sam" not in name else None).train()
    loss = model(torch.rand(2, 3, 64, 64)).square().mean()
    loss.backward()
    unused = ("prompt_encoder", "iou_prediction_head", "norm_head", "image_encoder.head.", "mask_tokens", "iou_token")
    without = [n for n, p in model.named_parameters() if p.grad is None and not any(u in n for u in unused)]
    assert without == []


def _reference_masks(model: SamSegmenter, images: torch.Tensor, boxes: torch.Tensor | None) -> torch.Tensor:
    """segment-anything's own decoder, one image at a time (no batching tricks): (B, 4, h, w)."""
    sam = model.sam
    out = []
    with torch.no_grad():
        emb = model.embed(images)
        for i in range(images.shape[0]):
            box = None if boxes is None else boxes[i : i + 1] * model.input_size
            sparse, dense = sam.prompt_encoder(points=None, boxes=box, masks=None)
            masks, _ = sam.mask_decoder.predict_masks(emb[i : i + 1], sam.prompt_encoder.get_dense_pe(), sparse, dense)
            out.append(masks)
    return torch.cat(out)


@pytest.mark.parametrize("prompt", ["none", "box"])
def test_batched_decode_equals_segment_anything(prompt: str) -> None:
    torch.manual_seed(0)
    model = build_model("sam_demo", num_classes=2, output_size=64, prompt=prompt).eval()
    images = torch.rand(3, 3, 256, 256)
    boxes = torch.tensor([[0.1, 0.2, 0.6, 0.7], [0.3, 0.3, 0.9, 0.8], [0.0, 0.0, 1.0, 1.0]]) if prompt == "box" else None
    with torch.no_grad():
        ours, _ = model.decode(model.embed(images), boxes)
    torch.testing.assert_close(ours, _reference_masks(model, images, boxes), rtol=1e-4, atol=1e-4)
    if prompt == "box":
        with pytest.raises(ValueError, match="pass boxes"):
            model(images)


def test_boxes_from_masks() -> None:
    masks = torch.zeros(2, 2, 10, 20)
    masks[0, 0, 2:5, 4:10] = 1
    masks[0, 1, 6:8, 1:3] = 1  # union over classes
    boxes = boxes_from_masks(masks, jitter=0.0)
    torch.testing.assert_close(boxes, torch.tensor([[1 / 20, 2 / 10, 10 / 20, 8 / 10], [0.0, 0.0, 1.0, 1.0]]))
    jittered = boxes_from_masks(masks, jitter=0.05, generator=torch.Generator().manual_seed(0))
    assert (jittered - boxes).abs().max() <= 0.05 + 1e-6 and not torch.equal(jittered, boxes)


# ---------------------------------------------------------------------------------------------------
# Official checkpoints: the key layout comes from segment-anything's own builders
# ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sam_vit_b_official_pth_loads_strictly(tmp_path: Path) -> None:
    torch.manual_seed(0)
    official = sam_model_registry["vit_b"]()  # segment-anything's builder: the official layout
    path = tmp_path / "sam_vit_b_01ec64.pth"
    torch.save(official.state_dict(), path)
    model = build_model("sam_vit_b", num_classes=1, output_size=256, checkpoint=path)
    assert round(model.sam.image_encoder.pos_embed.numel() / 1e3) == 3146  # 64 x 64 x 768
    assert sum(p.numel() for p in official.parameters()) == 93_735_472  # published: 93.7 M
    for key, value in official.state_dict().items():
        assert torch.equal(model.sam.state_dict()[key], value), key
    # the same official weights at 256 px: pos_embed and global rel-pos tables are resized
    small = build_model("sam_vit_b", num_classes=1, output_size=64, input_size=256, checkpoint=path).eval()
    assert small.sam.image_encoder.pos_embed.shape == (1, 16, 16, 768)
    with torch.no_grad():
        assert small(torch.rand(1, 3, 256, 256)).shape == (1, 1, 64, 64)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "official", "params"), [("sam_vit_l", "vit_l", 312_342_832), ("sam_vit_h", "vit_h", 641_090_608)])
def test_large_sam_official_layouts(name: str, official: str, params: int) -> None:
    reference = sam_model_registry[official]()
    assert sum(p.numel() for p in reference.parameters()) == params  # published: 312.3 M, 641.1 M
    model = build_model(name, num_classes=1, output_size=256)
    from dsfed.models.checkpoint import load_weights

    report = load_weights(model.sam, reference.state_dict(), strict=True)
    assert report.missing == report.unexpected == report.mismatched == []
    del reference


def test_tinysam_official_layout_pth(tmp_path: Path) -> None:
    reference = build_model("tinysam", num_classes=1, output_size=256).sam
    path = tmp_path / "tinysam_42.3.pth"
    torch.save(reference.state_dict(), path)
    model = build_model("tinysam", num_classes=2, output_size=64, input_size=256, checkpoint=path)
    assert 10.0e6 < sum(p.numel() for p in reference.parameters()) < 10.2e6  # published: about 10.1 M
    for key, value in reference.state_dict().items():
        assert torch.equal(model.sam.state_dict()[key], value), key


def test_strict_load_lists_every_bad_key(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    state = build_model("tinysam_demo", num_classes=1, output_size=64).sam.state_dict()
    state.pop("mask_decoder.iou_token.weight")
    state.pop("image_encoder.neck.0.weight")
    state["image_encoder.extra.weight"] = torch.zeros(1)
    state["mask_decoder.mask_tokens.weight"] = torch.zeros(3, 256)
    path = tmp_path / "broken.safetensors"
    save_file(state, str(path))
    with pytest.raises(CheckpointError) as info:
        build_model("tinysam_demo", num_classes=1, output_size=64, checkpoint=path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: does not fit Sam: ")
    assert "2 missing [image_encoder.neck.0.weight, mask_decoder.iou_token.weight]" in message
    assert "1 unexpected [image_encoder.extra.weight]" in message
    assert "1 shape mismatch [mask_decoder.mask_tokens.weight (file (3, 256), model (4, 256))]" in message
    with caplog.at_level(logging.WARNING):
        model = build_model("tinysam_demo", num_classes=1, output_size=64, checkpoint=path, strict=False)
    assert "non-strict load" in caplog.text and "image_encoder.neck.0.weight" in caplog.text
    assert torch.equal(model.sam.state_dict()["image_encoder.neck.1.weight"], state["image_encoder.neck.1.weight"])


def test_checkpoint_without_batchnorm_counters_loads_strictly(tmp_path: Path) -> None:
    """Some released checkpoints drop BatchNorm's num_batches_tracked; that is no reason to refuse them."""
    reference = build_model("tinysam_demo", num_classes=1, output_size=64).sam
    state = {k: v for k, v in reference.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert len(state) < len(reference.state_dict())
    torch.save(state, tmp_path / "mobile_sam.pt")
    model = build_model("tinysam_demo", num_classes=1, output_size=64, checkpoint=tmp_path / "mobile_sam.pt")
    assert torch.equal(model.sam.state_dict()["image_encoder.neck.0.weight"], state["image_encoder.neck.0.weight"])


def test_aliased_modules_publish_each_tensor_once() -> None:
    """DynUNet registers its blocks twice; its state dict must list each tensor once and still load strictly."""
    from safetensors.torch import load, save

    model = build_model("nnunet", num_classes=2, output_size=32, input_size=32)
    state = model.state_dict()
    storages = [t.untyped_storage().data_ptr() for t in state.values()]
    assert len(set(storages)) == len(storages) and len(state) < len(model.net.state_dict())
    other = build_model("nnunet", num_classes=2, output_size=32, input_size=32)
    other.load_state_dict({k: v + 1 for k, v in load(save(state)).items()}, strict=True)
    assert torch.equal(other.net.skip_layers.downsample.conv1.conv.weight, state["net.input_block.conv1.conv.weight"] + 1)


def test_own_segmenter_weights_round_trip(tmp_path: Path) -> None:
    model = build_model("unet", num_classes=2, output_size=64)
    path = tmp_path / "unet.safetensors"
    save_file(model.state_dict(), str(path))
    again = build_model("unet", num_classes=2, output_size=64, checkpoint=path)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


@pytest.mark.parametrize(("content", "expected"), [(None, "checkpoint file does not exist"), (b"garbage", "cannot read checkpoint")])
def test_unreadable_checkpoints(tmp_path: Path, content: bytes | None, expected: str) -> None:
    path = tmp_path / "sam.pth"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=expected):
        read_state_dict(path)


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    """weights_only=True: a .pth holding arbitrary objects is refused, not executed."""
    path = tmp_path / "evil.pth"
    torch.save({"model": logging.getLogger("x")}, path)
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        read_state_dict(path)


def test_a_foundation_with_other_classes_loads_all_but_its_class_head(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A 2-class foundation (disc, cup) for a 1-class task: the head is re-initialised, with a warning naming
    it; everything else is the checkpoint's. ``dsfed config validate`` says so beforehand, without torch."""
    from dsfed.heads import head_classes

    torch.manual_seed(0)
    foundation = build_model("tinysam_demo", num_classes=2, output_size=32, input_size=64)
    state = {k: v.contiguous() for k, v in foundation.state_dict().items()}
    path = tmp_path / "foundation.safetensors"
    save_file(state, str(path))
    assert head_classes(path) == 2
    fresh = build_model("tinysam_demo", num_classes=1, output_size=32, input_size=64)
    with caplog.at_level(logging.WARNING):
        model = build_model("tinysam_demo", num_classes=1, output_size=32, input_size=64, checkpoint=path)
    assert "class head has 2 classes and the task 1: head.weight, head.bias re-initialised" in caplog.text
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], fresh.state_dict()[k]) for k in ("head.weight", "head.bias"))
    assert all(torch.equal(loaded[k], v) for k, v in state.items() if not k.startswith("head."))
    same = build_model("tinysam_demo", num_classes=2, output_size=32, input_size=64, checkpoint=path)  # same classes: all of it
    assert torch.equal(same.state_dict()["head.weight"], state["head.weight"])


def test_a_foundation_that_names_its_classes_gives_the_tasks_channels_by_name(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The multi-task foundation records its union classes: a one-class skin task gets the trained ``lesion``
    channel (no re-initialisation), a task with an unknown class re-initialises the head with a warning."""
    import json

    from dsfed.heads import checkpoint_classes, head_fits

    torch.manual_seed(0)
    union = ["optic_disc", "optic_cup", "lesion", "polyp"]
    foundation = build_model("tinysam_demo", num_classes=4, output_size=32, input_size=64)
    state = {k: v.contiguous() for k, v in foundation.state_dict().items()}
    with torch.no_grad():
        state["head.bias"] = torch.tensor([0.1, 0.2, 0.3, 0.4])
    path = tmp_path / "foundation.safetensors"
    save_file(state, str(path), metadata={"classes": json.dumps(union)})
    assert checkpoint_classes(path) == union and head_fits(path, ["polyp", "lesion"]) and not head_fits(path, ["liver"])
    picked = build_model("tinysam_demo", num_classes=2, output_size=32, input_size=64, checkpoint=path, classes=("polyp", "lesion"))
    assert torch.equal(picked.state_dict()["head.bias"], torch.tensor([0.4, 0.3]))
    assert torch.equal(picked.state_dict()["head.weight"], state["head.weight"][[3, 2]])
    with caplog.at_level(logging.WARNING):
        other = build_model("tinysam_demo", num_classes=1, output_size=32, input_size=64, checkpoint=path, classes=("liver",))
    assert "knows ['optic_disc', 'optic_cup', 'lesion', 'polyp'], not ['liver']" in caplog.text
    assert not torch.equal(other.state_dict()["head.bias"], torch.tensor([0.4]))
