"""RC + RF's server side on hand-made client replies: condensation, per-client selection, FedAvg inside a group only."""

from __future__ import annotations

from pathlib import Path

import torch

from dsfed.data.store import ClientStore
from dsfed.federated.protocol import FitResult
from dsfed.samfed.rcrf import LOGITS, RCRF, kd_mask, pixel_accuracy
from dsfed.samfed.server import build_architecture
from dsfed.stages.samfed import run_samfed_public
from tests.samfed.tiny import tiny_params


def test_pixel_accuracy_and_the_kd_gate() -> None:
    masks = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]], [[[1.0, 1.0], [1.0, 1.0]]]])
    logits = torch.tensor([[[[5.0, -5.0], [-5.0, 5.0]]], [[[5.0, 5.0], [5.0, 5.0]]]])
    assert pixel_accuracy(logits, masks).tolist() == [0.75, 1.0]
    assert kd_mask(torch.tensor([0.9, 0.7, 0.8]), torch.tensor([0.8, 0.6, 0.9]), gate=0.75).tolist() == [1.0, 0.0, 0.0]


def test_groups_average_only_their_own_members_and_the_server_condenses(tmp_path: Path) -> None:
    params = tiny_params(tmp_path)
    store = ClientStore(run_samfed_public(params, tmp_path / "artifacts", root=tmp_path))
    arch = params.samfed.architectures["unet"]
    strategy = RCRF(lambda: build_architecture(params.samfed, arch, 0, torch.device("cpu")), store, rc_epochs=1, seed=0)
    before = {k: v.clone() for k, v in strategy.server.state_dict().items()}
    logits = strategy.server_logits()[LOGITS]
    n = len(logits)
    good = (store_masks(store) * 20 - 10).half()   # a client that is right everywhere teaches the server
    groups = {"unet": {LOGITS: logits, "w.x": torch.zeros(3)}, "nnunet": {LOGITS: logits}}
    membership = {"a": "unet", "b": "unet", "c": "nnunet"}
    results = [("a", FitResult({LOGITS: torch.zeros(n, 1, 16, 16).half(), "w.x": torch.full((3,), 1.0)}, 1)),
               ("b", FitResult({LOGITS: torch.zeros(n, 1, 16, 16).half(), "w.x": torch.full((3,), 4.0)}, 3)),
               ("c", FitResult({LOGITS: good}, 2))]
    out = strategy.aggregate_groups(1, groups, results, membership)
    assert torch.allclose(out["unet"]["w.x"], torch.full((3,), 3.25))   # (1*1 + 3*4) / 4: a and b only
    assert set(out["nnunet"]) == {LOGITS}   # a lone architecture shares no weights
    assert torch.equal(out["unet"][LOGITS], out["nnunet"][LOGITS])
    assert any(not torch.equal(before[k], v) for k, v in strategy.server.state_dict().items())   # RC trained the server
    assert strategy.best["c"][1] > strategy.best["a"][1] and strategy.best["c"][0] == 1.0
    state = strategy.state_dict()
    again = RCRF(lambda: build_architecture(params.samfed, arch, 0, torch.device("cpu")), store)
    again.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(again.server.state_dict().values(), strategy.server.state_dict().values()))
    assert again.best == strategy.best


def store_masks(store: ClientStore) -> torch.Tensor:
    """The public train then val masks (what RCRF's logits are aligned with)."""
    import numpy as np

    rows = np.concatenate([store.split("train"), store.split("val")])
    return torch.from_numpy(np.stack([np.asarray(store.masks[int(r)]) for r in rows]).astype("float32"))
