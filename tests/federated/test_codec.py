"""The payload codec: half floats, deltas, zstd; the rounds loop with it; the ledger counts the encoded bytes."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from dsfed.config import parse_params
from dsfed.federated import (
    FedAvg,
    FitResult,
    InProcessEngine,
    Ledger,
    RoundsConfig,
    Weights,
    from_bytes,
    run_rounds,
    to_bytes,
)
from dsfed.federated.codec import MAGIC, PLAIN, Codec, decode, encode, reply_codec
from dsfed.federated.errors import FederatedError
from dsfed.federated.federation import Federation
from dsfed.federated.ledger import read_ledger
from dsfed.federated.settings import CodecConfig
from dsfed.settings import ConfigError
from tests.federated.project import tiny_raw
from tests.federated.toy import toy_clients, toy_model


def _weights(seed: int = 0) -> Weights:
    """Weights like a trained model's: normal values of mixed scales, an integer buffer and a bf16 tensor."""
    g = torch.Generator().manual_seed(seed)
    return {"conv.weight": 0.05 * torch.randn(64, 32, 3, 3, generator=g), "conv.bias": torch.randn(64, generator=g),
            "norm.num_batches_tracked": torch.tensor(12), "head.half": torch.randn(16, generator=g).to(torch.bfloat16)}


def test_the_plain_codec_writes_what_to_bytes_writes() -> None:
    weights = _weights()
    assert encode(weights) == to_bytes(weights) and encode(weights, PLAIN) == to_bytes(weights)
    assert reply_codec(encode(weights)) is None


# one row per codec: (codec, the largest error relative to each tensor's largest magnitude)
ROWS = [
    (Codec("fp32", compress="zstd"), 0.0),
    (Codec("fp16"), 2.0**-11),
    (Codec("fp16", compress="zstd"), 2.0**-11),
    (Codec("bf16", compress="zstd", level=9), 2.0**-8),
]


@pytest.mark.parametrize(("codec", "tolerance"), ROWS, ids=lambda v: v.to_json() if isinstance(v, Codec) else str(v))
def test_a_codec_round_trip_is_within_its_precision_and_keeps_other_tensors(codec: Codec, tolerance: float) -> None:
    weights = _weights()
    payload = encode(weights, codec)
    assert payload == encode(dict(reversed(list(weights.items()))), codec)   # byte-stable, whatever the key order
    assert payload.startswith(MAGIC) == (codec.compress == "zstd")
    back = from_bytes(payload)   # any receiver reads any codec that needs no reference
    assert set(back) == set(weights)
    for name in ("conv.weight", "conv.bias"):
        assert back[name].dtype == torch.float32
        error = float((back[name] - weights[name]).abs().max() / weights[name].abs().max())
        assert error <= tolerance and (tolerance == 0) == (error == 0)
    assert torch.equal(back["norm.num_batches_tracked"], weights["norm.num_batches_tracked"])
    assert back["head.half"].dtype == torch.bfloat16 and torch.equal(back["head.half"], weights["head.half"])   # travels as it is
    plain = len(to_bytes(weights))
    assert len(payload) < (plain if codec.dtype == "fp32" else 0.6 * plain)


def test_a_delta_keeps_the_precision_of_the_change_not_of_the_weights() -> None:
    sent = _weights(0)
    trained = {k: v + 1e-5 * torch.randn_like(v) if v.dtype == torch.float32 else v for k, v in sent.items()}   # one round's change
    codec = Codec("bf16", delta=True, compress="zstd")
    back = decode(encode(trained, codec, reference=sent), reference=sent)
    change = (trained["conv.weight"] - sent["conv.weight"]).abs().max()
    assert float((back["conv.weight"] - trained["conv.weight"]).abs().max()) <= float(change) * 2.0**-8
    whole = from_bytes(encode(trained, Codec("bf16")))   # the same weights sent whole in bf16 lose the change
    assert float((whole["conv.weight"] - trained["conv.weight"]).abs().max()) > 100 * float(change) * 2.0**-8
    with pytest.raises(FederatedError, match="without the weights it was taken from"):
        from_bytes(encode(trained, codec, reference=sent))
    with pytest.raises(FederatedError, match="needs the reference"):
        encode(trained, codec)


class NudgeClient:
    """Sends back exactly what it received, each float32 weight moved by ``step``: a round's change far below
    float16's resolution of the weights (values near 1, a step of 1e-5)."""

    def __init__(self, name: str, step: float) -> None:
        self.name, self.step = name, step
        self.received: list[Weights] = []

    def describe(self) -> Any:
        from dsfed.federated import ClientInfo

        return ClientInfo({"train": 10, "val": 0})

    def train(self, weights: Weights, round: int, config: dict[str, Any]) -> FitResult:
        self.received.append(weights)
        return FitResult({k: v + self.step if v.is_floating_point() else v for k, v in weights.items()}, 10)

    def evaluate(self, weights: Weights, split: str) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


@pytest.mark.parametrize(("config", "drift"), [
    (CodecConfig(down="fp16", up="bf16", delta=True, compress="zstd"), True),   # the server's float32 weights gather every step
    (CodecConfig(down="fp16", up="fp16"), False),                               # whole fp16 updates round the steps away
])
def test_the_server_adds_deltas_to_its_float32_weights(config: CodecConfig, drift: bool) -> None:
    start = {"w": torch.full((256,), 1.0) + torch.linspace(0, 1e-3, 256), "count": torch.tensor(3)}
    clients = [NudgeClient(n, 1e-5) for n in ("a", "b")]
    federation = Federation(InProcessEngine(clients), "run", codec=config)
    result = run_rounds(federation, FedAvg(), start, RoundsConfig(rounds=3), progress=False)
    moved = result.weights["w"] - start["w"]
    if drift:
        assert torch.allclose(moved, torch.full_like(moved, 3e-5), rtol=2.0**-7, atol=0)   # three steps of 1e-5, kept
    else:
        assert float(moved.abs().max()) <= 2.0**-11 and not torch.allclose(moved, torch.full_like(moved, 3e-5), rtol=0.1)
    assert torch.equal(result.weights["count"], start["count"])
    sent = clients[0].received[-1]["w"]   # what the client trained from: the float16 download
    assert torch.equal(sent, sent.half().float())


def test_rounds_with_the_codec_cost_the_encoded_bytes_and_stay_close_to_float32(tmp_path) -> None:
    codec = CodecConfig(down="fp16", up="bf16", delta=True, compress="zstd")
    start = {k: v.clone() for k, v in toy_model(hidden=256).state_dict().items()}   # ~2,600 weights: the header is no longer most of it
    runs = {}
    for name, config in (("plain", None), ("codec", codec)):
        torch.manual_seed(0)
        ledger = Ledger(tmp_path / f"{name}.csv")
        federation = Federation(InProcessEngine(toy_clients(3, hidden=256)), "run", ledger, codec=config)
        runs[name] = (run_rounds(federation, FedAvg(), start, RoundsConfig(rounds=3, seed=0), progress=False), read_ledger(ledger.path))
    (plain, plain_rows), (coded, coded_rows) = runs["plain"], runs["codec"]
    assert [(r["round"], r["client"], r["direction"], r["what"]) for r in coded_rows] == \
        [(r["round"], r["client"], r["direction"], r["what"]) for r in plain_rows]
    for direction, most in (("down", 0.6), ("up", 0.6)):
        pairs = [(c["bytes"], p["bytes"]) for c, p in zip(coded_rows, plain_rows) if c["direction"] == direction]
        assert pairs and all(c < most * p for c, p in pairs), (direction, pairs)
    # the first download in the ledger is exactly the encoded initial weights, asking for bf16 deltas back
    sent = Federation(InProcessEngine([]), "", codec=codec)
    assert coded_rows[0]["bytes"] == len(encode(start, sent.down, reply=sent.up))
    # Adam at lr 1e-2 turns a rounding of 1e-4 into different steps: the runs agree in loss, not weight by weight
    losses = [(c.metrics["loss"], p.metrics["loss"]) for c, p in zip(coded.history, plain.history)]
    assert all(abs(c - p) <= 1e-3 * p for c, p in losses), losses


def test_the_codec_in_params_is_validated_field_by_field(tmp_path) -> None:
    raw = tiny_raw({"fedunet": {"model": "unet"}})
    raw["federated"]["codec"] = {"down": "fp8"}
    with pytest.raises(ConfigError, match=r"federated\.codec\.down"):
        parse_params(raw, root=tmp_path)
    raw["federated"]["codec"] = {"down": "fp16", "compress": "zstd", "level": 5}
    assert not parse_params(raw, root=tmp_path).federated.codec.plain
    raw["federated"].update(engine="simulation", methods={"fedunet": {"model": "unet", "secagg": {}}})
    with pytest.raises(ConfigError, match="SecAgg"):
        parse_params(raw, root=tmp_path)
