"""Settings of the ``federated@<method>`` stages: rounds, sampling, local training, the methods."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from dsfed.data.settings import AugmentConfig
from dsfed.settings import Device, Strict, known_model, resolve_path
from dsfed.training.settings import LossConfig

__all__ = ["CodecConfig", "DPConfig", "FederatedConfig", "LocalSection", "MethodConfig"]


class LocalSection(Strict):
    """Local training per round: Adam (DSFedMed: lr 1e-4, 1 epoch); ``amp``: bf16 autocast (a GPU win for
    SAM ViTs, a loss for TinySAM: docs/benchmarks)."""

    epochs: Annotated[int, Field(ge=1)] = 1
    batch_size: Annotated[int, Field(ge=1)] = 4
    lr: Annotated[float, Field(gt=0)] = 1e-4
    amp: bool = False
    # keep: Adam's moments carry over from round to round (each client keeps them in its own state);
    # reset: a fresh optimiser every round, as FedAvg baselines usually do
    optimizer_state: Literal["keep", "reset"] = "keep"


class DPConfig(Strict):
    """Client-level differential privacy of one method (``federated.methods.<m>.dp``; :mod:`dsfed.federated.privacy`)."""

    mode: Literal["central", "local"] = "central"
    # L2 norm every client's update (its weights minus the round's global weights) is clipped to
    clip: Annotated[float, Field(gt=0)] = 1.0
    # z: the noise's standard deviation over the sensitivity (central: clip / clients; local: clip)
    noise_multiplier: Annotated[float, Field(ge=0)] = 1.0
    # the δ of the (ε, δ) budget reported
    delta: Annotated[float, Field(gt=0, lt=1)] = 1e-5


class SecAggConfig(Strict):
    """Flower's SecAgg+ for one method's aggregation (``federated.methods.<m>.secagg``; :mod:`dsfed.federated.secure`).

    The server learns only the sample-weighted mean of the clients' updates (their weights minus the round's
    global weights), never one client's. Each entry of an update is clipped to ``clipping_range`` (a client
    whose update exceeds it fails its round with one line) and quantised to ``quantization_range`` levels, so
    the mean differs from plain FedAvg's by at most about ``2 * clipping_range / quantization_range`` per entry.
    Needs ``federated.engine: flower`` or ``simulation`` and a strategy that aggregates the weighted mean
    (fedavg, fedprox, fedadam).
    """

    # how many neighbours share each client's key secrets: an int > 2, or a fraction of the round's clients
    num_shares: int | float = 1.0
    # shares needed to rebuild a dropped client's mask: an int >= 2, or a fraction of num_shares (at least 2)
    reconstruction_threshold: int | float = 0.6
    # every entry of an update must lie in [-clipping_range, clipping_range]
    clipping_range: Annotated[float, Field(gt=0)] = 8.0
    quantization_range: Annotated[int, Field(gt=1)] = 2**22
    # masks are drawn in [0, modulus_range): a power of 2, above quantization_range, at most 2**32
    modulus_range: Annotated[int, Field(gt=1, le=2**32)] = 2**32

    @field_validator("num_shares", "reconstruction_threshold")
    @classmethod
    def _count_or_fraction(cls, value: int | float, info: ValidationInfo) -> int | float:
        lowest = 3 if info.field_name == "num_shares" else 2
        if isinstance(value, bool) or value == 1:
            return 1.0 if value == 1 else value
        if isinstance(value, int) and value < lowest:
            raise ValueError(f"as a count it must be at least {lowest}, got {value}")
        if isinstance(value, float) and not 0 < value <= 1:
            raise ValueError(f"as a fraction it must lie in (0, 1], got {value}")
        return value

    @model_validator(mode="after")
    def _ranges(self) -> SecAggConfig:
        if self.modulus_range & (self.modulus_range - 1) or self.modulus_range <= self.quantization_range:
            raise ValueError(f"secagg.modulus_range must be a power of 2 above quantization_range ({self.quantization_range}), "
                             f"got {self.modulus_range}")
        return self


class CodecConfig(Strict):
    """How weights travel in the federated rounds (``federated.codec``; :mod:`dsfed.federated.codec`).

    The server keeps its weights in float32 whatever travels; the ledger counts the encoded bytes. The
    default sends float32 safetensors as they are. Half the traffic: ``down: fp16``, ``up: bf16``,
    ``delta: true``, ``compress: zstd`` (docs/benchmarks/codec-cpu.json has the bytes and the Dice of each).
    """

    # the float type of the global weights sent to the clients (for training and for evaluation)
    down: Literal["fp32", "fp16", "bf16"] = "fp32"
    # the float type of the clients' updates
    up: Literal["fp32", "fp16", "bf16"] = "fp32"
    # updates as the client's weights minus those it received (the server adds them to the float32 weights it
    # sent): a round's change keeps its precision in a half type, and the download's rounding does not stay
    delta: bool = False
    # lossless compression of every payload: none, or zstd (Blosc byte shuffle + zstd)
    compress: Literal["none", "zstd"] = "none"
    level: Annotated[int, Field(ge=1, le=9)] = 5

    @property
    def plain(self) -> bool:
        """Float32 whole weights, uncompressed: what travels without a codec."""
        return self.down == "fp32" and self.up == "fp32" and not self.delta and self.compress == "none"


SECURE_STRATEGIES = ("fedavg", "fedprox", "fedadam")
"""Strategies whose aggregate is the clients' sample-weighted mean (what SecAgg+ gives the server)."""


class MethodConfig(Strict):
    """One ``federated@<method>`` stage: a model trained by a strategy over the training clients.

    ``strategy: centralized`` pools every training client's data into one (the upper bound that
    federated learning is compared to); the others are federated aggregation rules.
    """

    model: str
    strategy: str = "fedavg"  # a name in dsfed.federated.registry.STRATEGIES, or "centralized" (pooled data)
    strategy_args: dict[str, float] = {}
    client: str = "segmentation"  # the client algorithm: a name in dsfed.federated.registry.CLIENT_ALGORITHMS
    input_size: Annotated[int, Field(ge=16)] | None = None
    prompt: Literal["none", "box"] = "none"
    # msa: Medical-SAM-Adapter blocks in a SAM ViT encoder, the rest of it frozen and never sent (FedMSA)
    adapter: Literal["none", "msa"] = "none"
    checkpoint: Path | None = None
    local_keys: list[str] = []
    rounds: Annotated[int, Field(ge=1)] | None = None
    lr: Annotated[float, Field(gt=0)] | None = None
    # client-level differential privacy (clipping and Gaussian noise, central or local); null: none
    dp: DPConfig | None = None
    # Flower's SecAgg+: the server sees only the sum of the clients' updates; null: plain aggregation
    secagg: SecAggConfig | None = None

    _known_model = field_validator("model")(known_model)

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, value: str) -> str:
        from dsfed.federated.registry import CENTRALIZED, STRATEGIES

        if value not in STRATEGIES and value != CENTRALIZED:
            raise ValueError(f"unknown strategy {value!r} (known: {', '.join([*STRATEGIES, CENTRALIZED])})")
        return value

    @field_validator("client")
    @classmethod
    def _known_client(cls, value: str) -> str:
        from dsfed.federated.registry import CLIENT_ALGORITHMS

        if value not in CLIENT_ALGORITHMS:
            raise ValueError(f"unknown client algorithm {value!r} (known: {', '.join(CLIENT_ALGORITHMS)})")
        return value

    @model_validator(mode="after")
    def _dp_needs_a_federation(self) -> MethodConfig:
        if self.dp is not None and self.strategy == "centralized":
            raise ValueError("dp: the centralized baseline pools the data in one place; client-level DP is for federated strategies")
        if self.secagg is not None:
            if self.strategy not in SECURE_STRATEGIES:
                raise ValueError(f"secagg: strategy {self.strategy!r} needs each client's update; SecAgg+ gives the server only "
                                 f"their weighted mean (use one of {', '.join(SECURE_STRATEGIES)})")
            if self.dp is not None and self.dp.mode == "central":
                raise ValueError("secagg with dp.mode central: the server cannot clip updates it never sees; use dp.mode local")
        return self

    @field_validator("local_keys")
    @classmethod
    def _regexes(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a valid regex ({exc})") from exc
        return value


class FlowerSection(Strict):
    """How the federated stages reach hospitals' nodes when ``federated.engine: flower`` (docs/deploy.md)."""

    # The SuperLink's Control API, where `flwr run` submits the run (`dsfed server start` prints it)
    control: str = "127.0.0.1:9093"
    # The CA certificate that signed the SuperLink's certificate (TLS); null: plaintext, for 127.0.0.1 only
    root_certificates: Path | None = None
    # FLWR_HOME of the `flwr` command the stages run (its connection config and the apps it installed)
    home: Path = Path(".flower")
    # How long one message (a round's training, an evaluation) waits for a node's reply
    timeout_s: Annotated[float, Field(gt=0)] = 600.0
    # How long a run waits at its start for a node of every client (it goes on without late ones
    # while federated.min_clients holds)
    wait_nodes_s: Annotated[float, Field(ge=0)] = 120.0
    # federated.engine: simulation: CPUs (and GPUs) Flower's simulation engine (Ray) reserves per simulated
    # hospital; as many run at once as fit the machine (2 cores, client_cpus 1: two at a time)
    client_cpus: Annotated[int, Field(ge=1)] = 1
    client_gpus: Annotated[int, Field(ge=0)] = 0

    @model_validator(mode="after")
    def _plaintext_only_on_loopback(self) -> FlowerSection:
        host = self.control.rsplit(":", 1)[0].strip("[]")
        if self.root_certificates is None and host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"federated.flower.control: {self.control} is not this machine; set root_certificates (TLS) "
                             "to reach a SuperLink elsewhere")
        return self


class FederatedConfig(Strict):
    """The ``federated@<method>`` stages: FedAvg-style rounds on the clients' real data, and baselines."""

    rounds: Annotated[int, Field(ge=1)] = 10
    device: Device = "auto"
    fraction: Annotated[float, Field(gt=0, le=1)] = 1.0
    min_clients: Annotated[int, Field(ge=1)] = 1
    local: LocalSection = LocalSection()
    loss: LossConfig = LossConfig()
    augment: AugmentConfig = AugmentConfig()
    methods: dict[str, MethodConfig] = {}
    # How the server reaches the clients: inprocess (every client in the stage's process, reading its
    # store under artifacts/clients/), flower (each hospital's own node, docs/deploy.md) or simulation
    # (Flower's simulation engine on this machine: one virtual node per client over its store under
    # artifacts/clients/, the same ServerApp and ClientApp as flower; for trying 20-100 clients)
    engine: Literal["inprocess", "flower", "simulation"] = "inprocess"
    flower: FlowerSection = FlowerSection()
    # How weights travel in the rounds: float type each way, updates as deltas, lossless compression
    codec: CodecConfig = CodecConfig()
    # The folder every method's `checkpoint` lies in (or is linked into): the federated stages depend on it
    # as a whole (DVC cannot depend on an optional path from params), so a checkpoint replaced in place
    # retrains the methods. A checkpoint outside it is refused.
    pretrained_dir: Path = Path("data/pretrained")
    # The federation: the clients whose stores the federated stages read (training: all but data.holdout;
    # testing: all of them). null: every client. A list pins it, so a client that joins later reaches the
    # student through DSFedMed's synthetic data and distillation without retraining these stages.
    clients: list[str] | None = None

    @field_validator("clients")
    @classmethod
    def _distinct(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError(f"a client is listed twice: {value}")
        return value

    @model_validator(mode="after")
    def _secagg_needs_flower(self) -> FederatedConfig:
        secure = [name for name, spec in self.methods.items() if spec.secagg is not None]
        if secure and self.engine == "inprocess":
            raise ValueError(f"federated.methods.{secure[0]}.secagg needs federated.engine flower or simulation: "
                             "SecAgg+ runs between Flower's SuperLink and the nodes")
        if secure and not self.codec.plain:
            raise ValueError(f"federated.codec with federated.methods.{secure[0]}.secagg: SecAgg+ quantises the updates itself; "
                             "leave federated.codec at its defaults (fp32, no delta, no compression) for that method's run")
        return self

    @model_validator(mode="after")
    def _checkpoints_in_pretrained_dir(self, info: ValidationInfo) -> FederatedConfig:
        folder = resolve_path(self.pretrained_dir, info).resolve()
        outside = [f"federated.methods.{name}.checkpoint: {spec.checkpoint} is outside federated.pretrained_dir ({self.pretrained_dir}), "
                   "which the federated stages depend on; move or link it there, or point pretrained_dir at its folder"
                   for name, spec in self.methods.items()
                   if spec.checkpoint is not None and not resolve_path(spec.checkpoint, info).resolve().is_relative_to(folder)]
        if outside:
            raise ValueError("\n".join(outside))
        return self
