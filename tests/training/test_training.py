"""Losses against hand-computed values; the training loop lowers the loss and adds extra terms."""

from __future__ import annotations

import math

import torch
from torch.utils.data import DataLoader, TensorDataset

from dsfed.config import LossConfig
from dsfed.models import build_model
from dsfed.training.loop import train_epochs
from dsfed.training.losses import build_loss


def test_bce_pos_weight_by_hand() -> None:
    loss = build_loss(LossConfig(pos_weight=2.0, dice=0.0))
    logits = torch.tensor([[[[0.0, 2.0]]]])
    target = torch.tensor([[[[1.0, 0.0]]]])
    expected = (2.0 * math.log(2.0) + math.log(1 + math.exp(2.0))) / 2  # positive pixel weighted x2
    assert math.isclose(float(loss(logits, target)), expected, rel_tol=1e-6)


def test_dice_term_adds_monai_dice() -> None:
    logits = torch.full((1, 1, 4, 4), 10.0)
    target = torch.zeros(1, 1, 4, 4)
    target[..., :2, :] = 1.0
    bce = float(build_loss(LossConfig(dice=0.0))(logits, target))
    both = float(build_loss(LossConfig(dice=1.0))(logits, target))
    soft_dice = 1 - 2 * 8 / (8 + 16)  # sigmoid(10) ~ 1 everywhere: overlap 8, |pred| 16, |target| 8
    assert math.isclose(both - bce, soft_dice, abs_tol=1e-3)


class _Dicts(TensorDataset):
    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        image, mask = super().__getitem__(i)
        return {"image": image, "mask": mask}


def test_loop_learns_and_adds_extra_loss() -> None:
    torch.manual_seed(0)
    images = torch.rand(16, 3, 32, 32)
    masks = (images[:, :1, ::2, ::2] > 0.5).float()  # learnable: threshold of the red channel
    loader = DataLoader(_Dicts(images, masks), batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(0))
    model = build_model("unet", num_classes=1, output_size=16, input_size=32)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss = build_loss(LossConfig())
    first = train_epochs(model, loader, opt, loss, epochs=1)
    assert first["samples"] == 16 and first["steps"] == 4
    assert train_epochs(model, loader, opt, loss, epochs=3)["steps"] == 12
    last = [train_epochs(model, loader, opt, loss)["loss"] for _ in range(6)][-1]
    assert last < 0.7 * first["loss"]
    calls = []
    with_extra = train_epochs(model, loader, opt, loss, extra_loss=lambda: calls.append(1) or torch.tensor(5.0))
    assert len(calls) == 4 and with_extra["loss"] > 5.0


def test_a_non_finite_loss_stops_training_naming_the_client_and_round() -> None:
    """``lr: .inf`` is refused by the params; a loss that still diverges stops with one line, not a NaN model."""
    import pytest

    from dsfed.errors import DsfedError, TrainingDiverged

    torch.manual_seed(0)
    images = torch.rand(8, 3, 32, 32)
    masks = (images[:, :1, ::2, ::2] > 0.5).float()
    loader = DataLoader(_Dicts(images, masks), batch_size=4)
    model = build_model("unet", num_classes=1, output_size=16, input_size=32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    loss = build_loss(LossConfig())
    with pytest.raises(TrainingDiverged, match=r"^client site_b, round 3: the training loss is nan at step 2: lower the learning rate") as info:
        train_epochs(model, loader, opt, loss, extra_loss=iter([torch.tensor(0.0), torch.tensor(float("nan"))]).__next__,
                     desc="client site_b, round 3")
    assert isinstance(info.value, DsfedError) and "\n" not in str(info.value)
    after = model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)      # the first step ran
    assert all(torch.isfinite(v).all() for v in after.values())           # the NaN step never reached the weights
