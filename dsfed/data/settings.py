"""Settings of the data package: where a client's data come from (sources), task-wide data settings, the
``prepare`` stage, training augmentation."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import Field, ValidationInfo, field_validator, model_validator

from dsfed.settings import CLASS_NAME, Strict, paths_checked, resolve_path

__all__ = [
    "SOURCE_KINDS", "AugmentConfig", "ClientConfig", "CompressionConfig", "DataConfig", "FedDGSource", "FoldersSource", "ISICSource",
    "MaskMapping", "PH2Source", "Pairing", "Partition", "PhantomSource", "PrepareConfig", "ProstateSource", "SourceSpec", "SplitConfig",
]


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
    """How an image finds its mask: same stem plus ``mask_suffix``, or two regexes sharing ``(?P<id>...)``.

    ``mask_suffix: ""`` pairs equal file names (``images/case1.png`` with ``masks/case1.png``); it needs two
    different folders.
    """

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
        if paths_checked(info):
            resolved = resolve_path(value, info).resolve()
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
    task: Literal["fundus", "skin", "polyp"] = "fundus"
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

    @model_validator(mode="after")
    def _folders_apart(self) -> FoldersSource:
        same = Path(self.images) == Path(self.masks)
        if same and self.pairing.image_regex is None and self.pairing.mask_suffix == "":
            raise ValueError(f"images and masks are both the folder {self.images!r}: with pairing.mask_suffix \"\" every "
                             "image would pair with itself (give a mask_suffix, e.g. \"_mask\", or image_regex/mask_regex)")
        return self


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

SOURCE_KINDS = frozenset(get_args(cls.model_fields["kind"].annotation)[0] for cls in get_args(get_args(SourceSpec)[0]))
"""Every ``source.kind`` (from the union above: the single source of these names)."""


class ClientConfig(Strict):
    """One hospital: where its data comes from, and which of its masks training may read."""

    source: SourceSpec
    # full: masks for every split (supervised clients).
    # test_only: masks exist but only the test split's may be read (SAM-Fed's unlabelled clients: evaluation
    #   only); ClientStore.masks raises UnlabelledError for a train/val row.
    # none: no masks at all (the store is written without a masks array; evaluation skips the client).
    labels: Literal["full", "test_only", "none"] = "full"


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

    @field_validator("val")
    @classmethod
    def _some_validation(cls, value: float) -> float:
        if value == 0:
            raise ValueError("0 leaves no validation data: every federated method would keep its untrained round 0 "
                             "(model selection needs validation samples; e.g. 0.15)")
        return value

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
    # a class covering more than this share of a client's mask pixels is refused as an inverted mask (a FedDG
    # or prostate layout whose foreground value is the other way round imports as ~99 % foreground); raise it
    # (up to 1) for a task whose structure really fills the image
    max_foreground: Annotated[float, Field(gt=0, le=1)] = 0.9


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
