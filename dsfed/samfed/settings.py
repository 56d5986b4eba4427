"""Settings of the SAM-Fed stage set (``samfed:`` in params): its own task, public set, clients and variants.

SAM-Fed is a second federated task in the same pipeline: its stores live under ``artifacts/samfed/`` and
:func:`samfed_view` turns this section into a :class:`~dsfed.config.Params` of its own, so the pipeline's
prepare and evaluate code run on it unchanged. Which parts are the paper's and which are ours: docs/samfed.md.
Nothing here imports torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from dsfed.data.settings import AugmentConfig, ClientConfig, DataConfig, PrepareConfig
from dsfed.models.names import option_problems
from dsfed.settings import CLIENT_NAME, NAME_RULE, Strict, known_model, name_problems
from dsfed.training.settings import LossConfig

__all__ = [
    "AgreementConfig",
    "ArchitectureConfig",
    "DistillWeights",
    "InitConfig",
    "LoraConfig",
    "PUBLIC",
    "SamFedConfig",
    "TeacherConfig",
    "VariantConfig",
]

PUBLIC = "public"
"""The server's labelled public set: a store at ``artifacts/samfed/public/data.zarr``, never a client."""


class LoraConfig(Strict):
    """LoRA on the teacher's image-encoder attention (peft; SAMed: rank 4 on the qkv projection)."""

    rank: Annotated[int, Field(ge=1, le=256)] = 4
    alpha: Annotated[float, Field(gt=0)] = 4.0
    targets: list[str] = ["qkv"]   # module-name suffixes inside the image encoder
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0


class TeacherConfig(Strict):
    """``samfed_teacher``: the foundation SAM fine-tuned on the public set with LoRA, decoder trainable."""

    model: str = "sam_demo"
    checkpoint: Path | None = Path("data/pretrained/embedded/sam_demo.safetensors")
    input_size: Annotated[int, Field(ge=16)] | None = None
    lora: LoraConfig = LoraConfig()
    epochs: Annotated[int, Field(ge=0)] = 8
    batch_size: Annotated[int, Field(ge=1)] = 4
    lr: Annotated[float, Field(gt=0)] = 1e-4
    loss: LossConfig = LossConfig()

    @field_validator("model")
    @classmethod
    def _sam_family(cls, value: str) -> str:
        known_model(value)
        if not value.startswith(("sam_", "tinysam")):
            raise ValueError(f"{value!r} is not a SAM-family model: LoRA goes on a SAM image encoder (sam_demo, sam_vit_b, tinysam...)")
        return value


class ArchitectureConfig(Strict):
    """A client architecture: the lightweight model clients of this kind train and deploy."""

    model: str
    input_size: Annotated[int, Field(ge=16)] | None = None
    checkpoint: Path | None = None
    lr: Annotated[float, Field(gt=0)] = 1e-3

    _known_model = field_validator("model")(known_model)


class InitConfig(Strict):
    """``samfed_init@<architecture>``: the supervised global model on the public set (the warm-up rounds, done at once)."""

    epochs: Annotated[int, Field(ge=1)] = 20
    batch_size: Annotated[int, Field(ge=1)] = 4


class AgreementConfig(Strict):
    """The pixel agreement between the SAM teacher and the global model (docs/samfed.md: the dossier's PROPOSAL).

    ``start``: the threshold of round 1; ``adaptive`` sets each next round's from the partner's confidence
    quantile ``quantile`` over the previous round's pixels, clipped to [low, high]; ``fixed`` keeps ``start``.
    ``arbitration``: a confident disagreement supervises with the more confident source's label.
    """

    threshold: Literal["adaptive", "fixed"] = "adaptive"
    start: Annotated[float, Field(gt=0.5, lt=1)] = 0.85
    low: Annotated[float, Field(gt=0.5, lt=1)] = 0.75
    high: Annotated[float, Field(gt=0.5, lt=1)] = 0.95
    quantile: Annotated[float, Field(gt=0, lt=1)] = 0.5
    arbitration: bool = True

    @model_validator(mode="after")
    def _ordered(self) -> AgreementConfig:
        if not self.low <= self.start <= self.high:
            raise ValueError(f"needs low <= start <= high, got {self.low}, {self.start}, {self.high}")
        return self


class DistillWeights(Strict):
    """The dual distillation's weights (HSSF's scale: KL 10 at T = 2, mean over pixels, no T squared)."""

    lam_sam: Annotated[float, Field(ge=0)] = 1.0
    lam_kd: Annotated[float, Field(ge=0)] = 10.0
    temperature: Annotated[float, Field(gt=0)] = 2.0


class VariantConfig(Strict):
    """One ``samfed@<variant>`` stage: SAM-Fed, a baseline or an ablation.

    ``pseudo``: what supervises the clients' unlabelled pixels: ``agreement`` (SAM-Fed), ``sam`` (SAM's
    hard labels, no agreement), ``self`` (FixMatch-style: the client's own weak-view labels above the
    threshold), ``labels`` (the clients' true masks: the supervised upper bound, which alone may read
    them), ``none``. ``global_kd``: the KL from the received global model. ``public_pass``: a supervised
    pass over the public set each round.
    """

    model: str = "tinysam"   # a key of samfed.architectures: every client's (and RC + RF's server model's)
    clients: dict[str, str] = {}   # client -> architecture, for a heterogeneous federation (the others: ``model``)
    # fedavg: one architecture, weights averaged; rcrf: HSSF's RC + RF, any architectures, only public-set
    # predictions travel (never weights)
    aggregation: Literal["fedavg", "rcrf"] = "fedavg"
    server_model: str | None = None   # rcrf: the server's architecture (None: ``model``)
    rc_epochs: Annotated[int, Field(ge=1)] = 1   # rcrf: condensation passes per round (HSSF: 4)
    rf_epochs: Annotated[int, Field(ge=1)] = 1   # rcrf: fusion passes per round (HSSF: 4)
    group_fedavg: bool = True   # rcrf: clients that share an architecture also average their weights (FedAvg in the group)
    pseudo: Literal["agreement", "sam", "self", "labels", "none"] = "agreement"
    global_kd: bool = True
    public_pass: bool = True
    threshold: Literal["adaptive", "fixed"] | None = None   # None: samfed.agreement.threshold
    rounds: Annotated[int, Field(ge=1)] | None = None


class SamFedConfig(Strict):
    """The SAM-Fed task. An empty ``public`` (and no variants) leaves the stage set empty."""

    data: DataConfig = DataConfig(classes=["lesion"])
    prepare: PrepareConfig = PrepareConfig()
    # the server's labelled public set, by name (at most one; a mapping so that DVC's foreach gives no stage
    # when it is empty)
    public: dict[str, ClientConfig] = {}
    clients: dict[str, ClientConfig] = {}
    architectures: dict[str, ArchitectureConfig] = {}
    teacher: TeacherConfig = TeacherConfig()
    init: InitConfig = InitConfig()
    rounds: Annotated[int, Field(ge=1)] = 8
    min_clients: Annotated[int, Field(ge=1)] = 1
    local: Annotated[dict[str, int], Field()] = {"epochs": 1, "batch_size": 4}
    loss: LossConfig = LossConfig()
    augment: AugmentConfig = AugmentConfig()
    agreement: AgreementConfig = AgreementConfig()
    distill: DistillWeights = DistillWeights()
    variants: dict[str, VariantConfig] = {}

    @field_validator("clients")
    @classmethod
    def _client_names(cls, value: dict[str, ClientConfig]) -> dict[str, ClientConfig]:
        for name, client in value.items():
            if not CLIENT_NAME.match(name) or name == PUBLIC:
                raise ValueError(f"client name {name!r} must be {NAME_RULE}, and not {PUBLIC!r}")
            if client.labels == "full":
                raise ValueError(f"{name}.labels: SAM-Fed clients are unlabelled: set test_only (masks for testing) or none")
        return value

    @field_validator("local")
    @classmethod
    def _local_keys(cls, value: dict[str, int]) -> dict[str, int]:
        unknown = sorted(set(value) - {"epochs", "batch_size"})
        if unknown or any(v < 1 for v in value.values()):
            raise ValueError(f"takes epochs and batch_size >= 1, got {value}")
        return value

    @model_validator(mode="after")
    def _references(self) -> SamFedConfig:
        problems = []
        if len(self.public) > 1:
            problems.append(f"samfed.public: one public set, got {len(self.public)} ({', '.join(self.public)})")
        if self.variants and not self.public:
            problems.append("samfed.public: the variants need the server's labelled public set")
        if self.variants and not self.clients:
            problems.append("samfed.clients: the variants need at least one client")
        if self.data.holdout is not None:
            problems.append("samfed.data.holdout: SAM-Fed tests every client on its own test split; leave it null")
        for section in ("public", "architectures", "variants"):
            problems += name_problems(f"samfed.{section}", getattr(self, section))
        for name, spec in self.architectures.items():
            problems += [f"samfed.architectures.{name}.{p}" for p in option_problems(spec.model, spec.input_size)]
        for name, variant in self.variants.items():
            known = ', '.join(self.architectures) or 'none'
            for field, arch in [("model", variant.model), ("server_model", variant.server_model),
                                *((f"clients.{c}", a) for c, a in variant.clients.items())]:
                if arch is not None and arch not in self.architectures:
                    problems.append(f"samfed.variants.{name}.{field}: no architecture {arch!r} (samfed.architectures: {known})")
            for client in variant.clients:
                if client not in self.clients:
                    problems.append(f"samfed.variants.{name}.clients: no client {client!r} (samfed.clients: {', '.join(self.clients)})")
            archs = {variant.clients.get(c, variant.model) for c in self.clients}
            if variant.aggregation == "fedavg" and len(archs) > 1:
                problems.append(f"samfed.variants.{name}: FedAvg averages one architecture, these clients run {len(archs)} "
                                f"({', '.join(sorted(archs))}); use aggregation: rcrf")
        if self.min_clients > max(len(self.clients), 1):
            problems.append(f"samfed.min_clients: {self.min_clients} is more than the {len(self.clients)} clients")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.public) and bool(self.variants)

    def architecture_of(self, variant: str, client: str) -> str:
        """The architecture ``client`` runs in ``variant``."""
        spec = self.variants[variant]
        return spec.clients.get(client, spec.model)

    @property
    def public_set(self) -> ClientConfig:
        """The one public set's config."""
        return next(iter(self.public.values()))
