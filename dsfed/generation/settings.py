"""Settings of the diffusion backbone, its training and its sampler (pydantic, frozen, extra fields refused)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from dsfed.settings import Device, Strict, known_model, paths_checked, resolve_path

__all__ = ["BackboneConfig", "BackboneSpec", "ControlNetConfig", "DiffusionTrainSpec", "MaskAugmentConfig", "PretrainConfig", "QualityConfig",
           "SamplerSpec", "SegmenterConfig", "SynthesizeConfig"]

_STRICT = ConfigDict(extra="forbid", frozen=True)


class BackboneSpec(BaseModel):
    """The embedded pixel-space ``UNet2DConditionModel`` and its noise schedule.

    The default (3.8 M parameters, 7.7 MB as fp16 safetensors; its ControlNet 1.6 M) runs at 64 px: three
    resolutions (64, 32, 16), attention (self, and cross to the learned prompt) only at 16 px: at 32 px its
    1,024-token self-attention tripled the CPU training step (3.7 s vs 1.2 s, batch 16).

    ``prompts``: the task prompts the backbone learnt, each with its own learned embedding row (the
    stand-in for a text encoder); row 0 is the generic prompt, used for any other text
    (:meth:`EmbeddedBackbone.use_prompt`). Empty: one prompt row only (the fundus-only weights of 2026-11).
    """

    model_config = _STRICT

    sample_size: Annotated[int, Field(ge=8, le=512)] = 64
    in_channels: Literal[3] = 3
    block_out_channels: tuple[int, ...] = (32, 64, 128)
    layers_per_block: Annotated[int, Field(ge=1, le=4)] = 1
    down_block_types: tuple[str, ...] = ("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D")
    up_block_types: tuple[str, ...] = ("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D")
    cross_attention_dim: Annotated[int, Field(ge=1)] = 32
    attention_head_dim: Annotated[int, Field(ge=1)] = 32
    norm_num_groups: Annotated[int, Field(ge=1)] = 8
    prompt_tokens: Annotated[int, Field(ge=1, le=77)] = 1
    prompts: tuple[str, ...] = ()
    num_train_timesteps: Annotated[int, Field(ge=10)] = 1000
    beta_schedule: Literal["squaredcos_cap_v2", "linear", "scaled_linear"] = "squaredcos_cap_v2"
    prediction_type: Literal["epsilon", "v_prediction"] = "v_prediction"

    @model_validator(mode="after")
    def _consistent(self) -> BackboneSpec:
        n = len(self.block_out_channels)
        if len(self.down_block_types) != n or len(self.up_block_types) != n:
            raise ValueError(
                f"block_out_channels has {n} entries but down_block_types has {len(self.down_block_types)} "
                f"and up_block_types {len(self.up_block_types)}"
            )
        bad = [c for c in self.block_out_channels if c % self.norm_num_groups]
        if bad:
            raise ValueError(f"block_out_channels {bad} are not multiples of norm_num_groups {self.norm_num_groups}")
        if self.sample_size % 2 ** (n - 1):
            raise ValueError(f"sample_size {self.sample_size} is not divisible by 2^{n - 1} (the UNet's downsampling)")
        return self


class DiffusionTrainSpec(BaseModel):
    """One training run (backbone or ControlNet): AdamW, linear warm-up then cosine decay, optional EMA.

    ``condition_dropout`` only matters for ControlNet training: that fraction of samples sees a zeroed
    condition image, which is what classifier-free guidance samples against. ``prompt_dropout``: with
    per-sample task prompts, that fraction of samples is trained on the generic prompt (row 0), so a
    task the backbone was not trained on gets the mixture of all its tasks.
    """

    model_config = _STRICT

    steps: Annotated[int, Field(ge=1)] = 6000
    batch_size: Annotated[int, Field(ge=1)] = 128
    lr: Annotated[float, Field(gt=0)] = 5e-4
    weight_decay: Annotated[float, Field(ge=0)] = 0.01
    warmup_steps: Annotated[int, Field(ge=0)] = 200
    cosine_decay: bool = True
    grad_clip: Annotated[float, Field(gt=0)] | None = 1.0
    ema_decay: Annotated[float, Field(ge=0, lt=1)] | None = 0.999
    amp: bool = True
    condition_dropout: Annotated[float, Field(ge=0, le=1)] = 0.1
    prompt_dropout: Annotated[float, Field(ge=0, le=1)] = 0.1
    hflip: bool = True
    grad_checkpointing: bool = False
    seed: int = 0
    log_every: Annotated[int, Field(ge=1)] = 50


class SamplerSpec(BaseModel):
    """Sampling: a diffusers scheduler built from the backbone's noise schedule, with classifier-free guidance."""

    model_config = _STRICT

    sampler: Literal["ddim", "unipc"] = "ddim"
    steps: Annotated[int, Field(ge=1, le=1000)] = 30
    guidance_scale: Annotated[float, Field(ge=0)] = 2.0
    eta: Annotated[float, Field(ge=0, le=1)] = 0.0
    amp: bool = False


class PretrainSpec(BaseModel):
    """Everything ``dsfed pretrain --spec FILE`` may set; each section defaults to the shipped weights' settings."""

    model_config = _STRICT

    backbone: BackboneSpec = BackboneSpec()
    backbone_train: DiffusionTrainSpec = DiffusionTrainSpec()
    controlnet_train: DiffusionTrainSpec = DiffusionTrainSpec(seed=1)
    sampler: SamplerSpec = SamplerSpec()
    grid_n: Annotated[int, Field(ge=1)] = 8
    eval_n: Annotated[int, Field(ge=1)] = 64


# --------------------------------------------------------------------------------------------------
# Stage sections: backbone -> controlnet@<client> -> synthesize@<client> -> quality@<client>
# --------------------------------------------------------------------------------------------------


class PretrainConfig(Strict):
    """``backbone.kind: pretrain``: train the backbone and generic ControlNet in the stage (``dsfed pretrain``):
    ``corpus_n`` public phantom samples of each of ``tasks``, warm-started from the released folder ``init``
    when set."""

    corpus_n: Annotated[int, Field(ge=1)] = 2000
    tasks: tuple[Literal["fundus", "skin", "polyp"], ...] = ("fundus", "skin", "polyp")
    init: Path | None = None
    spec: PretrainSpec = PretrainSpec()

    @field_validator("tasks")
    @classmethod
    def _some(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value or len(set(value)) != len(value):
            raise ValueError("name each public task once (fundus, skin, polyp)")
        return value


class BackboneConfig(Strict):
    """The ``backbone`` stage: the frozen diffusion model that every client's ControlNet attaches to.

    ``kind``:
      - ``embedded``: the project's released weights in ``path`` (``data/pretrained/embedded``: a
        pixel-space UNet at 64 px trained on the public phantom corpora of fundus, skin and polyp
        images, one learnt prompt per task; data/pretrained/README.md);
      - ``pretrain``: retrain those weights inside the stage with ``pretrain`` (CPU: hours at the
        shipped size; tiny sizes for tests);
      - ``sd15``: a local Stable Diffusion 1.5 folder in diffusers format at ``path`` (unet, vae,
        text_encoder, tokenizer, scheduler; ``prompt`` is encoded once). Nothing is downloaded.
    ``prompt``: the task's prompt. The embedded backbone uses its learnt row for that text (the public
    tasks' prompts, ``dsfed.generation.corpus.TASK_PROMPTS``) and its generic row for any other text (a
    ``note:`` from ``config validate``); SD 1.5 encodes it once.
    ``controlnet``: the generic mask ControlNet the clients start from (a ``.safetensors`` of this
    project's layout, or an official diffusers ControlNet folder such as sd-controlnet-seg); null builds
    it from the backbone's UNet (``ControlNetModel.from_unet``).
    """

    kind: Literal["embedded", "pretrain", "sd15"] = "embedded"
    path: Path | None = Path("data/pretrained/embedded/backbone")
    controlnet: Path | None = Path("data/pretrained/embedded/controlnet.safetensors")
    prompt: str = "a retinal fundus photograph"
    pretrain: PretrainConfig = PretrainConfig()
    device: Device = "auto"

    @field_validator("path", "controlnet")
    @classmethod
    def _exists(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is not None and paths_checked(info):
            resolved = resolve_path(value, info).resolve()
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
    device: Device = "auto"


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
    device: Device = "auto"


class SegmenterConfig(Strict):
    """The controllability judge: a segmenter trained on the client's *real* training data alone."""

    model: str = "unet"
    input_size: Annotated[int, Field(ge=16)] | None = 64
    epochs: Annotated[int, Field(ge=1)] = 20
    batch_size: Annotated[int, Field(ge=1)] = 8
    lr: Annotated[float, Field(gt=0)] = 2e-3

    _known_model = field_validator("model")(known_model)


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
    device: Device = "auto"
