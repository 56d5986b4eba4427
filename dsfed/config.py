"""Pydantic models mirroring ``params.yaml``: one section per stage, errors that name the field path.

Load with :func:`load_params`; every problem comes back as a :class:`ConfigError` whose lines read
``clients.site_b.source.path: folder does not exist (/abs/path)``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from dsfed.errors import DsfedError
from dsfed.generation.settings import DiffusionTrainSpec, PretrainSpec, SamplerSpec

__all__ = [
    "AugmentConfig",
    "BackboneConfig",
    "ConfigError",
    "ControlNetConfig",
    "DataConfig",
    "DistillConfig",
    "EvaluateConfig",
    "FederatedConfig",
    "LossConfig",
    "MethodConfig",
    "Params",
    "PrepareConfig",
    "QualityConfig",
    "ServerSamConfig",
    "SourceSpec",
    "SynthesizeConfig",
    "load_params",
    "read_yaml",
]

CLIENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
CLASS_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ConfigError(DsfedError):
    """``params.yaml`` is invalid; ``problems`` holds one ``field.path: message`` line per error."""

    def __init__(self, problems: list[str], source: str = "params.yaml") -> None:
        self.problems = problems
        self.source = source
        super().__init__("; ".join(problems))


class Strict(BaseModel):
    """Base for every section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=True)


def _check_paths(info: ValidationInfo) -> bool:
    return bool(info.context and info.context.get("check_paths"))


def _resolve(path: Path, info: ValidationInfo) -> Path:
    root = Path(info.context.get("root", ".")) if info.context else Path(".")
    return path if path.is_absolute() else root / path


# --------------------------------------------------------------------------------------------------
# Sources: where a client's data comes from (a discriminated union on ``kind``)
# --------------------------------------------------------------------------------------------------


class MaskMapping(Strict):
    """How mask pixel values become classes.

    ``values`` maps a grey value to the classes it belongs to (multi-label: the FedDG cup value 0 is
    both optic_disc and optic_cup); every value found in a mask must be listed, within ``tolerance``.
    ``threshold`` instead marks pixels >= threshold as the single class (JPEG masks).
    """

    values: dict[int, list[str]] | None = None
    threshold: Annotated[int, Field(ge=1, le=255)] | None = None
    tolerance: Annotated[int, Field(ge=0, le=64)] = 0

    @model_validator(mode="after")
    def _one_rule(self) -> MaskMapping:
        if (self.values is None) == (self.threshold is None):
            raise ValueError("give exactly one of 'values' or 'threshold'")
        if self.values is not None:
            bad = [v for v in self.values if not 0 <= v <= 255]
            if bad:
                raise ValueError(f"mask values must be 0..255, got {bad}")
        return self

    def classes(self) -> set[str]:
        """Class names this mapping can produce (empty for ``threshold``: the task's only class)."""
        return {c for names in (self.values or {}).values() for c in names}


class Pairing(Strict):
    """How an image finds its mask: same stem plus ``mask_suffix``, or two regexes sharing ``(?P<id>...)``."""

    mask_suffix: str = ""
    image_regex: str | None = None
    mask_regex: str | None = None

    @model_validator(mode="after")
    def _regexes(self) -> Pairing:
        if (self.image_regex is None) != (self.mask_regex is None):
            raise ValueError("give both 'image_regex' and 'mask_regex', or neither")
        for name in ("image_regex", "mask_regex"):
            pattern = getattr(self, name)
            if pattern is None:
                continue
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{name}: not a valid regex ({exc})") from exc
            if "id" not in compiled.groupindex:
                raise ValueError(f"{name}: needs a named group (?P<id>...)")
        if self.image_regex is None and self.mask_suffix == "":
            raise ValueError("give 'mask_suffix' or 'image_regex'/'mask_regex' (images and masks would pair with themselves)")
        return self


class Partition(Strict):
    """Take one part of a dataset split into ``parts`` clients (the same spec on each, ``index`` differs).

    ``dirichlet``: samples are grouped by quantile bins of ``attribute``; each group is shared out with
    proportions drawn from Dirichlet(alpha) (small alpha: strongly non-IID). ``attribute``: client i gets
    the i-th quantile of ``attribute`` (as real work splits ISIC by skin tone).
    """

    method: Literal["dirichlet", "attribute"]
    parts: Annotated[int, Field(ge=2, le=64)]
    index: Annotated[int, Field(ge=0)]
    attribute: Literal["brightness", "foreground"] = "brightness"
    alpha: Annotated[float, Field(gt=0)] = 0.5
    bins: Annotated[int, Field(ge=1, le=64)] | None = None
    seed: int = 0

    @model_validator(mode="after")
    def _index_in_range(self) -> Partition:
        if self.index >= self.parts:
            raise ValueError(f"index {self.index} must be < parts {self.parts}")
        return self

    def family(self) -> dict[str, Any]:
        """The settings every part of the same split must share (all but ``index``)."""
        return self.model_dump(exclude={"index"})


class _SourceBase(Strict):
    partition: Partition | None = None

    @field_validator("path", check_fields=False)
    @classmethod
    def _path_exists(cls, value: Path, info: ValidationInfo) -> Path:
        if _check_paths(info):
            resolved = _resolve(value, info).resolve()
            if not resolved.exists():
                kind = "file" if resolved.suffix else "folder"
                raise ValueError(f"{kind} does not exist ({resolved})")
        return value


class PhantomSource(_SourceBase):
    """Built-in phantom data: ``site`` names a style in the table at ``path``.

    Fundus ``view``: ``full`` (the whole photograph, circular field of view) or ``roi`` (a disc-centred
    crop spanning 1/``roi_zoom`` of the photograph's width, like the FedDG / REFUGE ROI sets).
    """

    kind: Literal["phantom"]
    task: Literal["fundus", "skin"] = "fundus"
    path: Path
    site: str
    n: Annotated[int, Field(ge=1, le=100_000)] = 80
    seed: int = 0
    view: Literal["full", "roi"] = "full"
    roi_zoom: Annotated[float, Field(ge=1.5, le=6)] = 3.0
    roi_jitter: Annotated[float, Field(ge=0, le=0.3)] = 0.08

    @model_validator(mode="after")
    def _roi_is_fundus(self) -> PhantomSource:
        if self.view == "roi" and self.task != "fundus":
            raise ValueError(f"view 'roi' is a disc-centred crop: task must be 'fundus', not {self.task!r}")
        return self


class FoldersSource(_SourceBase):
    """Generic ``<path>/<images>/`` and ``<path>/<masks>/`` folders with a pairing rule."""

    kind: Literal["folders"]
    path: Path
    images: str = "images"
    masks: str = "masks"
    pairing: Pairing = Pairing(mask_suffix="_mask")
    mask_mapping: MaskMapping


class FedDGSource(_SourceBase):
    """Multi-site fundus in the FedDG layout ``<path>/<domain>/{train,test}/ROIs/{image,mask}/``.

    Masks: 0 = cup, 128 = rim, 255 = background -> optic_disc (rim + cup) and optic_cup (cup).
    """

    kind: Literal["feddg"]
    path: Path
    domain: str
    mask_mapping: MaskMapping = MaskMapping(values={0: ["optic_disc", "optic_cup"], 128: ["optic_disc"], 255: []})


class ProstateSource(_SourceBase):
    """Multi-site prostate slices ``<path>/<site>/{train,test}/{image,mask}/`` (grey, repeated to RGB)."""

    kind: Literal["prostate"]
    path: Path
    site: str
    mask_mapping: MaskMapping = MaskMapping(threshold=1)


class ISICSource(_SourceBase):
    """ISIC challenge layout: ``<path>/<images>/<id>.jpg`` with ``<path>/<masks>/<id>_segmentation.png``."""

    kind: Literal["isic"]
    path: Path
    images: str = "ISIC2018_Task1-2_Training_Input"
    masks: str = "ISIC2018_Task1_Training_GroundTruth"
    mask_mapping: MaskMapping = MaskMapping(threshold=128)


class PH2Source(_SourceBase):
    """PH2 layout: ``<path>/<id>/<id>_Dermoscopic_Image/<id>.bmp`` with ``<id>_lesion/<id>_lesion.bmp``."""

    kind: Literal["ph2"]
    path: Path
    mask_mapping: MaskMapping = MaskMapping(threshold=128)


SourceSpec = Annotated[
    PhantomSource | FoldersSource | FedDGSource | ProstateSource | ISICSource | PH2Source,
    Field(discriminator="kind"),
]


class ClientConfig(Strict):
    """One hospital: where its data comes from."""

    source: SourceSpec


# --------------------------------------------------------------------------------------------------
# Stage sections
# --------------------------------------------------------------------------------------------------


class DataConfig(Strict):
    """Task-wide data settings shared by every stage."""

    classes: list[str] = ["optic_disc", "optic_cup"]
    image_size: Annotated[int, Field(ge=16, le=4096)] = 128
    mask_size: Annotated[int, Field(ge=8, le=4096)] = 64
    resize: Literal["stretch", "pad"] = "stretch"
    holdout: str | None = None

    @field_validator("classes")
    @classmethod
    def _class_names(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("needs at least one class")
        bad = [c for c in value if not CLASS_NAME.match(c)]
        if bad:
            raise ValueError(f"class names must be identifiers, got {bad}")
        if len(set(value)) != len(value):
            raise ValueError("class names must be unique")
        return value

    @model_validator(mode="after")
    def _sizes(self) -> DataConfig:
        if self.mask_size > self.image_size:
            raise ValueError(f"mask_size {self.mask_size} must be <= image_size {self.image_size}")
        return self


class SplitConfig(Strict):
    """Fractions of each client's samples for validation and test (the rest trains).

    When a source's layout already has a test split (FedDG, prostate) that split is kept and ``val`` is
    carved out of its training part.
    """

    val: Annotated[float, Field(ge=0, lt=1)] = 0.15
    test: Annotated[float, Field(ge=0, lt=1)] = 0.2

    @model_validator(mode="after")
    def _leaves_training(self) -> SplitConfig:
        if self.val + self.test >= 1:
            raise ValueError(f"val + test = {self.val + self.test:g} leaves nothing to train on")
        return self


class CompressionConfig(Strict):
    """Blosc compression of the Zarr arrays (one sample per chunk)."""

    codec: Literal["zstd", "lz4", "blosclz", "zlib"] = "zstd"
    level: Annotated[int, Field(ge=0, le=9)] = 5


class PrepareConfig(Strict):
    """The ``prepare@<client>`` stage: client data into a Zarr store."""

    split: SplitConfig = SplitConfig()
    compression: CompressionConfig = CompressionConfig()


class LossConfig(Strict):
    """Training loss: BCE with ``pos_weight`` (DSFedMed: 2) plus ``dice`` x MONAI Dice loss."""

    name: Literal["bce_dice"] = "bce_dice"
    pos_weight: Annotated[float, Field(gt=0)] = 2.0
    dice: Annotated[float, Field(ge=0)] = 0.0


class AugmentConfig(Strict):
    """Training augmentation (``dsfed.data.transforms.build_augment``); ``enabled: false`` for none.

    Spatial transforms rotate and scale about the image centre, so one random draw lines up an image of
    size S and a mask of size Sm (no pixel translations, which would not scale between the two).
    """

    enabled: bool = True
    flip: Annotated[float, Field(ge=0, le=1)] = 0.5
    affine: Annotated[float, Field(ge=0, le=1)] = 0.5
    rotate_deg: Annotated[float, Field(ge=0, le=180)] = 15.0
    scale: Annotated[float, Field(ge=0, lt=1)] = 0.1
    gamma: Annotated[float, Field(ge=0, le=1)] = 0.3
    color: Annotated[float, Field(ge=0, le=1)] = 0.15
    noise_std: Annotated[float, Field(ge=0, le=0.5)] = 0.02


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
    checkpoint: Path | None = None
    local_keys: list[str] = []
    rounds: Annotated[int, Field(ge=1)] | None = None
    lr: Annotated[float, Field(gt=0)] | None = None

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        from dsfed.models.names import MODEL_NAMES

        if value not in MODEL_NAMES:
            raise ValueError(f"unknown model {value!r} (known: {', '.join(MODEL_NAMES)})")
        return value

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

    @field_validator("local_keys")
    @classmethod
    def _regexes(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a valid regex ({exc})") from exc
        return value


class FederatedConfig(Strict):
    """The ``federated@<method>`` stages: FedAvg-style rounds on the clients' real data, and baselines."""

    rounds: Annotated[int, Field(ge=1)] = 10
    device: Literal["auto", "cpu", "cuda"] = "auto"
    fraction: Annotated[float, Field(gt=0, le=1)] = 1.0
    min_clients: Annotated[int, Field(ge=1)] = 1
    local: LocalSection = LocalSection()
    loss: LossConfig = LossConfig()
    augment: AugmentConfig = AugmentConfig()
    methods: dict[str, MethodConfig] = {}
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


# --------------------------------------------------------------------------------------------------
# Generation (DSFedMed): backbone -> controlnet@<client> -> synthesize@<client> -> quality@<client>
# --------------------------------------------------------------------------------------------------


class PretrainConfig(Strict):
    """``backbone.kind: pretrain``: train the backbone and generic ControlNet in the stage (``dsfed pretrain``)."""

    corpus_n: Annotated[int, Field(ge=1)] = 6000
    spec: PretrainSpec = PretrainSpec()


class BackboneConfig(Strict):
    """The ``backbone`` stage: the frozen diffusion model that every client's ControlNet attaches to.

    ``kind``:
      - ``embedded``: the project's released weights in ``path`` (``data/pretrained/embedded``: a
        pixel-space UNet at 64 px trained on the public phantom corpus; data/pretrained/README.md);
      - ``pretrain``: retrain those weights inside the stage with ``pretrain`` (CPU: hours at the
        shipped size; tiny sizes for tests);
      - ``sd15``: a local Stable Diffusion 1.5 folder in diffusers format at ``path`` (unet, vae,
        text_encoder, tokenizer, scheduler; ``prompt`` is encoded once). Nothing is downloaded.
    ``controlnet``: the generic mask ControlNet the clients start from (a ``.safetensors`` of this
    project's layout, or an official diffusers ControlNet folder such as sd-controlnet-seg); null builds
    it from the backbone's UNet (``ControlNetModel.from_unet``).
    """

    kind: Literal["embedded", "pretrain", "sd15"] = "embedded"
    path: Path | None = Path("data/pretrained/embedded/backbone")
    controlnet: Path | None = Path("data/pretrained/embedded/controlnet.safetensors")
    prompt: str = "a retinal fundus photograph"
    pretrain: PretrainConfig = PretrainConfig()
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @field_validator("path", "controlnet")
    @classmethod
    def _exists(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is not None and _check_paths(info):
            resolved = _resolve(value, info).resolve()
            if not resolved.exists():
                raise ValueError(f"does not exist ({resolved})")
        return value

    @model_validator(mode="after")
    def _path_needed(self) -> BackboneConfig:
        if self.kind in ("embedded", "sd15") and self.path is None:
            raise ValueError(f"kind {self.kind!r} loads its weights from `path`; set it")
        return self


class ControlNetConfig(DiffusionTrainSpec):
    """``controlnet@<client>``, run at each client: fine-tune the generic ControlNet on the client's
    training image/mask pairs (backbone frozen; AdamW, warm-up then cosine decay, optional EMA;
    ``amp``: bf16 autocast and ``grad_checkpointing`` are CUDA options: bf16 is slower on this CPU).
    Only the ControlNet's weights and the client's masks are uploaded."""

    steps: Annotated[int, Field(ge=1)] = 40
    batch_size: Annotated[int, Field(ge=1)] = 8
    lr: Annotated[float, Field(gt=0)] = 1e-3
    warmup_steps: Annotated[int, Field(ge=0)] = 5
    ema_decay: Annotated[float, Field(ge=0, lt=1)] | None = None
    amp: bool = False
    log_every: Annotated[int, Field(ge=1)] = 5
    check_draws: Annotated[int, Field(ge=1)] = 1   # noise draws per pair for the fixed-noise loss before/after
    device: Literal["auto", "cpu", "cuda"] = "auto"


class MaskAugmentConfig(Strict):
    """Extra conditioning masks for synthesis: after one pass over the uploaded masks as they are, each
    further mask is an uploaded one flipped (``flip``), rotated/scaled (``affine``) and elastically
    deformed (``elastic``: MONAI's ``Rand2DElastic``, control points every ``elastic_spacing`` px moved up to
    ``elastic_magnitude`` px); probabilities are per mask. Nearest-neighbour resampling keeps masks binary."""

    enabled: bool = True
    flip: Annotated[float, Field(ge=0, le=1)] = 0.5
    affine: Annotated[float, Field(ge=0, le=1)] = 0.8
    rotate_deg: Annotated[float, Field(ge=0, le=180)] = 15.0
    scale: Annotated[float, Field(ge=0, lt=1)] = 0.15
    elastic: Annotated[float, Field(ge=0, le=1)] = 0.3
    elastic_spacing: Annotated[int, Field(ge=2)] = 16
    elastic_magnitude: Annotated[float, Field(ge=0)] = 3.0


class SynthesizeConfig(Strict):
    """``synthesize@<client>``, run at the server: ``n`` images from that client's uploaded ControlNet and
    masks (``val`` of them kept for model selection), sampled by ``sampler`` in batches of ``batch_size``."""

    n: Annotated[int, Field(ge=1)] = 64
    val: Annotated[float, Field(ge=0, lt=1)] = 0.15
    batch_size: Annotated[int, Field(ge=1)] = 16
    sampler: SamplerSpec = SamplerSpec(steps=10, guidance_scale=2.0)
    augment: MaskAugmentConfig = MaskAugmentConfig()
    device: Literal["auto", "cpu", "cuda"] = "auto"


class SegmenterConfig(Strict):
    """The controllability judge: a segmenter trained on the client's *real* training data alone."""

    model: str = "unet"
    input_size: Annotated[int, Field(ge=16)] | None = 64
    epochs: Annotated[int, Field(ge=1)] = 20
    batch_size: Annotated[int, Field(ge=1)] = 8
    lr: Annotated[float, Field(gt=0)] = 2e-3

    _known_model = field_validator("model")(MethodConfig._known_model.__func__)  # type: ignore[attr-defined]


class QualityConfig(Strict):
    """``quality@<client>``, run at the client (it needs the real images): controllability, realism and
    memorisation of the client's synthetic set; only the summary numbers go back to the server.

    Realism is a Frechet distance on ImageNet EfficientNet-Lite0 features (not Inception: not FID), at
    ``feature_size`` px; memorisation compares nearest-training-image distances of synthetic and of
    held-out real images (``dsfed.generation.quality.memorisation`` documents its flag).
    """

    segmenter: SegmenterConfig = SegmenterConfig()
    feature_size: Annotated[int, Field(ge=32, le=1024)] = 224
    grid_n: Annotated[int, Field(ge=1, le=64)] = 8
    device: Literal["auto", "cpu", "cuda"] = "auto"


class ServerSamConfig(Strict):
    """``server_sam``, at the server: fine-tune the foundation SAM on the union of every source client's
    synthetic train split; the epoch with the best Dice on their synthetic val splits is kept.

    ``checkpoint``: where the foundation weights come from: the embedded default's pre-trained
    ``sam_demo`` (``dsfed pretrain-sam``), or an official SAM ``.pth`` for ``sam_vit_b|l|h``.
    """

    model: str = "sam_demo"
    checkpoint: Path | None = Path("data/pretrained/embedded/sam_demo.safetensors")
    input_size: Annotated[int, Field(ge=16)] | None = None
    epochs: Annotated[int, Field(ge=0)] = 4
    batch_size: Annotated[int, Field(ge=1)] = 4
    lr: Annotated[float, Field(gt=0)] = 1e-4
    loss: LossConfig = LossConfig(dice=0.5)
    augment: AugmentConfig = AugmentConfig()
    freeze_encoder: bool = False
    amp: bool = False
    device: Literal["auto", "cpu", "cuda"] = "auto"

    _known_model = field_validator("model")(MethodConfig._known_model.__func__)  # type: ignore[attr-defined]


class DistillConfig(Strict):
    """``distill``, at the server: learnability-guided mutual distillation between the server SAM and the
    federated ``student`` (DSFedMed: FedTinySAM) on the synthetic sets (``dsfed.distill``).

    Score s_i = lam * (-GT loss of SAM) + (1 - lam) * symmetric KL at ``temperature``; ``selection: pool``
    draws ``rate`` * N samples with probability proportional to exp(s_i / tau) each round;
    ``batch_topk`` is the released code's per-batch rule (``quantile``, ``keep``); ``all`` trains on every
    sample. ``mutual: false`` lets SAM only teach. ``warm_start`` begins from the previous run's distilled
    models when they exist (a client joined), else from ``server_sam`` and the student.
    """

    student: str = "fedtinysam"
    rounds: Annotated[int, Field(ge=1)] = 4
    lam: Annotated[float, Field(ge=0, le=1)] = 0.5
    temperature: Annotated[float, Field(gt=0)] = 1.0
    tau: Annotated[float, Field(gt=0)] = 1.0
    rate: Annotated[float, Field(gt=0, le=1)] = 0.5
    selection: Literal["pool", "batch_topk", "all"] = "pool"
    mutual: bool = True
    w_gt: Annotated[float, Field(ge=0)] = 1.0
    w_kl: Annotated[float, Field(ge=0)] = 1.0
    batch_size: Annotated[int, Field(ge=1)] = 4
    lr_sam: Annotated[float, Field(gt=0)] = 1e-4
    lr_tiny: Annotated[float, Field(gt=0)] = 1e-4
    freeze_sam_encoder: bool = False
    quantile: Annotated[float, Field(gt=0, le=1)] = 0.7
    keep: Annotated[float, Field(gt=0, le=1)] = 0.5
    warm_start: bool = True
    device: Literal["auto", "cpu", "cuda"] = "auto"


CRON_FIELD = re.compile(r"^[0-9A-Za-z*?,/#LW-]+$")


class RedistillConfig(Strict):
    """The ``redistill`` deployment served by ``make ui`` (``flows/redistill.py``): brings the pipeline up to
    date after a client joins. Not a DVC stage; its runs drive ``dvc repro``.

    ``on_join``: run on every ``dsfed.client.joined`` event (``dsfed clients add`` emits one).
    ``cron``: also run on this schedule (5 fields, e.g. ``"0 2 * * *"``: nightly at 02:00), which picks up
    clients added while no server was running; a run with nothing out of date does nothing. null: none.
    """

    on_join: bool = True
    cron: str | None = None
    timezone: str = "UTC"

    @field_validator("cron")
    @classmethod
    def _cron_fields(cls, value: str | None) -> str | None:
        if value is None:
            return value
        fields = value.split()
        if len(fields) != 5 or not all(CRON_FIELD.match(f) for f in fields):
            raise ValueError(f"{value!r} is not a 5-field cron expression (minute hour day month weekday)")
        return value


class EvaluateConfig(Strict):
    """``evaluate``: every model on every client's test split (the held-out client's whole store).

    Per-image Dice, IoU and HD95 (MONAI); mean, std and a percentile ``bootstrap`` interval at ``ci``;
    inference time measured over ``timing_images`` images after a warm-up; ``overlays`` test images
    per client are drawn with each model's prediction for the report.
    """

    bootstrap: Annotated[int, Field(ge=0)] = 1000
    ci: Annotated[float, Field(gt=0, lt=1)] = 0.95
    hd95: bool = True
    timing_images: Annotated[int, Field(ge=1)] = 16
    overlays: Annotated[int, Field(ge=0, le=16)] = 2
    device: Literal["auto", "cpu", "cuda"] = "auto"


class Params(Strict):
    """The whole ``params.yaml``."""

    seed: int = 0
    data: DataConfig = DataConfig()
    prepare: PrepareConfig = PrepareConfig()
    federated: FederatedConfig = FederatedConfig()
    backbone: BackboneConfig = BackboneConfig()
    controlnet: ControlNetConfig = ControlNetConfig()
    synthesize: SynthesizeConfig = SynthesizeConfig()
    quality: QualityConfig = QualityConfig()
    server_sam: ServerSamConfig = ServerSamConfig()
    distill: DistillConfig = DistillConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    redistill: RedistillConfig = RedistillConfig()
    clients: dict[str, ClientConfig]

    @field_validator("clients")
    @classmethod
    def _client_names(cls, value: dict[str, ClientConfig]) -> dict[str, ClientConfig]:
        if not value:
            raise ValueError("declare at least one client")
        for name in value:
            if not CLIENT_NAME.match(name):
                raise ValueError(f"client name {name!r} must be letters, digits, '_', '.', '-'")
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> Params:
        problems: list[str] = []
        if self.data.holdout is not None and self.data.holdout not in self.clients:
            problems.append(f"data.holdout: no client named {self.data.holdout!r}")
        known = set(self.data.classes)
        for name, client in self.clients.items():
            mapping = getattr(client.source, "mask_mapping", None)
            if mapping is None:
                continue
            unknown = sorted(mapping.classes() - known)
            if unknown:
                problems.append(
                    f"clients.{name}.source.mask_mapping.values: unknown classes {unknown} "
                    f"(data.classes: {', '.join(self.data.classes)})"
                )
            if mapping.threshold is not None and len(self.data.classes) != 1:
                problems.append(
                    f"clients.{name}.source.mask_mapping.threshold: a threshold gives one class, "
                    f"but data.classes has {len(self.data.classes)}"
                )
        problems += self._partition_problems()
        for name in self.federated.clients or []:
            if name not in self.clients:
                problems.append(f"federated.clients: no client named {name!r} (have: {', '.join(self.clients)})")
        training = self.federated_training_clients
        if self.federated.methods and self.federated.min_clients > len(training):
            problems.append(
                f"federated.min_clients: {self.federated.min_clients} is more than the {len(training)} training clients"
            )
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def _partition_problems(self) -> list[str]:
        """Clients that split one dataset must agree on the split and take distinct parts."""
        problems: list[str] = []
        families: dict[str, list[tuple[str, int]]] = {}
        for name, client in self.clients.items():
            part = client.source.partition
            if part is None:
                continue
            base = client.source.model_dump(mode="json", exclude={"partition"})
            key = repr(sorted(base.items())) + repr(sorted(part.family().items()))
            families.setdefault(key, []).append((name, part.index))
        for members in families.values():
            seen: dict[int, str] = {}
            for name, index in members:
                if index in seen:
                    problems.append(
                        f"clients.{name}.source.partition.index: part {index} is already taken by client {seen[index]!r}"
                    )
                seen[index] = name
        return problems

    @property
    def training_clients(self) -> list[str]:
        """Clients whose data may be used for training and model selection (all but the held-out one)."""
        return [name for name in self.clients if name != self.data.holdout]

    @property
    def federation(self) -> list[str]:
        """Clients the federated stages read (``federated.clients``, else every client), in params order."""
        chosen = self.federated.clients
        return [name for name in self.clients if chosen is None or name in chosen]

    @property
    def federated_training_clients(self) -> list[str]:
        """The federation's training clients (all but the held-out one)."""
        return [name for name in self.federation if name != self.data.holdout]


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate mapping keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first on line {seen[key] + 1})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file, failing on duplicate keys with ``file:line: duplicate key 'x'``."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError([f"cannot read ({exc.strerror})"], source=str(path)) from exc
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}" if mark is not None else "?"
        raise ConfigError([f"{where}: {exc.problem}"], source=str(path)) from exc


def format_validation_error(exc: ValidationError) -> list[str]:
    """One ``dotted.field.path: message`` line per pydantic error (discriminator tags dropped)."""
    lines: list[str] = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        # a discriminated union adds the tag ('phantom') as a path element: drop it
        if "source" in loc:
            i = loc.index("source")
            if i + 1 < len(loc) and loc[i + 1] in _SOURCE_KINDS:
                del loc[i + 1]
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        if err["type"] == "missing":
            msg = "required key is missing"
        path = ".".join(loc)
        for part in msg.split("\n"):
            lines.append(f"{path}: {part}" if path and not part.startswith(("clients.", "data.")) else part)
    return lines


_SOURCE_KINDS = {"phantom", "folders", "feddg", "prostate", "isic", "ph2"}


def parse_params(raw: Any, root: str | Path = ".", check_paths: bool = False, source: str = "params.yaml") -> Params:
    """Validate an already-parsed params mapping. Relative paths are resolved against ``root``."""
    if not isinstance(raw, dict):
        raise ConfigError(["top level must be a mapping"], source=source)
    try:
        return Params.model_validate(raw, context={"root": str(root), "check_paths": check_paths})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc), source=source) from exc


def load_params(path: str | Path = "params.yaml", check_paths: bool = False) -> Params:
    """Read and validate ``params.yaml``. ``check_paths`` also checks every client's source path exists.

    Raises:
        ConfigError: with one ``field.path: message`` line per problem.
    """
    path = Path(path)
    return parse_params(read_yaml(path), root=path.parent, check_paths=check_paths, source=str(path))
