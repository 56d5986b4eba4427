"""Settings of the diffusion backbone, its training and its sampler (pydantic, frozen, extra fields refused)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["BackboneSpec", "DiffusionTrainSpec", "SamplerSpec"]

_STRICT = ConfigDict(extra="forbid", frozen=True)


class BackboneSpec(BaseModel):
    """The embedded pixel-space ``UNet2DConditionModel`` and its noise schedule.

    The default (3.8 M parameters, 7.7 MB as fp16 safetensors; its ControlNet 1.6 M) runs at 64 px: three
    resolutions (64, 32, 16), attention (self, and cross to the learned prompt) only at 16 px: at 32 px its
    1,024-token self-attention tripled the CPU training step (3.7 s vs 1.2 s, batch 16).
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
    condition image, which is what classifier-free guidance samples against.
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
