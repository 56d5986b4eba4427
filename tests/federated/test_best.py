"""The best weights so far: kept by score, ties keep the earlier round, survive a new object (a resumed run)."""

from __future__ import annotations

from pathlib import Path

import torch

from dsfed.federated.best import BestWeights


def test_best_weights_keep_the_highest_score_and_the_earlier_round_on_a_tie(tmp_path: Path) -> None:
    best = BestWeights(tmp_path / "best.safetensors", metric="dice")
    assert best.score() == float("-inf") and best.round() == 0
    assert best.offer(0, 0.2, {"w": torch.zeros(2)}, force=True)
    assert best.offer(1, 0.5, {"w": torch.ones(2)})
    assert not best.offer(2, 0.5, {"w": torch.full((2,), 2.0)})   # a tie: the earlier round stays
    assert not best.offer(3, 0.1, {"w": torch.full((2,), 3.0)})
    again = BestWeights(tmp_path / "best.safetensors", metric="dice")   # what a resumed run opens
    rnd, weights = again.load()
    assert (rnd, again.score()) == (1, 0.5) and torch.equal(weights["w"], torch.ones(2))
    assert again.offer(4, 0.1, {"w": torch.zeros(2)}, force=True) and again.round() == 4
