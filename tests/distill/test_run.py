"""Distillation over rounds: checkpoints per round, and a resumed run ends exactly as an uninterrupted one."""

from __future__ import annotations

from pathlib import Path

import torch

from dsfed.distill.rounds import DistillSettings
from dsfed.distill.run import latest_round, run_distillation
from tests.distill.test_rounds import _data, _models


def _run(rounds: int, work: Path | None) -> tuple[list[dict], torch.nn.Module, torch.nn.Module]:
    sam, tiny = _models()
    images, masks = _data()
    opt_s, opt_t = torch.optim.Adam(sam.parameters(), lr=1e-3), torch.optim.Adam(tiny.parameters(), lr=1e-3)
    history = run_distillation(sam, tiny, opt_s, opt_t, images, masks, DistillSettings(rate=0.5), rounds, seed=3, work=work)
    return history, sam, tiny


def test_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    straight, sam_a, tiny_a = _run(4, None)
    first, _, _ = _run(2, tmp_path)  # "killed" after round 2: a fresh process would rebuild the models
    assert latest_round(tmp_path) == 2 and len(first) == 2
    resumed, sam_b, tiny_b = _run(4, tmp_path)
    assert [r["round"] for r in resumed] == [1, 2, 3, 4] and resumed == straight
    for a, b in ((sam_a, sam_b), (tiny_a, tiny_b)):
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "round-0003", "round-0004"]  # keep 2
    again, _, _ = _run(4, tmp_path)  # nothing left to do
    assert again == straight
