"""FedAvg: the sample-weighted mean, float64 accumulation, max for integer buffers, clear errors."""

from __future__ import annotations

import pytest
import torch

from dsfed.federated import FedAvg, FederatedError, FitResult, build_strategy


def _results(*items: tuple[str, dict[str, torch.Tensor], int]) -> list[tuple[str, FitResult]]:
    return [(name, FitResult(weights, n, {})) for name, weights, n in items]


def test_weighted_mean_of_known_tensors_and_int_buffers_take_the_max() -> None:
    results = _results(
        ("a", {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor(0.5, dtype=torch.float16), "bn.num_batches_tracked": torch.tensor(3), "flag": torch.tensor([True, False])}, 1),
        ("b", {"w": torch.tensor([5.0, 6.0]), "b": torch.tensor(1.5, dtype=torch.float16), "bn.num_batches_tracked": torch.tensor(7), "flag": torch.tensor([False, False])}, 3),
    )
    out = FedAvg().aggregate(1, {}, results)
    assert torch.equal(out["w"], torch.tensor([4.0, 5.0]))  # (1*[1,2] + 3*[5,6]) / 4
    assert out["b"].dtype == torch.float16 and out["b"].item() == 1.25
    assert out["bn.num_batches_tracked"].dtype == torch.int64 and out["bn.num_batches_tracked"].item() == 7
    assert torch.equal(out["flag"], torch.tensor([True, False]))


def test_mean_is_accumulated_in_float64() -> None:
    x = torch.full((1000,), 0.1, dtype=torch.float32)
    out = FedAvg().aggregate(1, {}, _results(*[(f"c{i}", {"x": x.clone()}, n) for i, n in enumerate([1, 7, 13])]))
    assert out["x"].dtype == torch.float32 and torch.equal(out["x"], x)  # identical clients average to themselves exactly


def test_order_of_results_only_matters_within_float_rounding() -> None:
    torch.manual_seed(0)
    items = [(f"c{i}", {"w": torch.randn(50)}, i + 1) for i in range(4)]
    a = FedAvg().aggregate(1, {}, _results(*items))
    b = FedAvg().aggregate(1, {}, _results(*reversed(items)))
    assert torch.allclose(a["w"], b["w"], atol=1e-7)


def test_mismatched_keys_shapes_and_zero_samples_are_errors() -> None:
    with pytest.raises(FederatedError, match="round 2: b sent other keys than a"):
        FedAvg().aggregate(2, {}, _results(("a", {"w": torch.zeros(2)}, 1), ("b", {"v": torch.zeros(2)}, 1)))
    with pytest.raises(FederatedError, match=r"b sent w with shape \(3,\)"):
        FedAvg().aggregate(2, {}, _results(("a", {"w": torch.zeros(2)}, 1), ("b", {"w": torch.zeros(3)}, 1)))
    with pytest.raises(FederatedError, match="positive total"):
        FedAvg().aggregate(2, {}, _results(("a", {"w": torch.zeros(2)}, 0)))


def test_registry() -> None:
    assert isinstance(build_strategy("fedavg"), FedAvg)
    from dsfed.errors import DsfedError

    with pytest.raises(DsfedError, match="unknown federated strategy 'fedsgd' \\(known: fedadam, fedavg, fedprox\\)"):
        build_strategy("fedsgd")
    with pytest.raises(DsfedError, match="strategy 'fedavg' does not take mu"):
        build_strategy("fedavg", mu=0.1)
