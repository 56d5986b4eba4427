"""The diffusion backbone: a frozen-able UNet, its fixed "prompt" embedding and noise schedule, saved as a folder."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from diffusers import DDPMScheduler, UNet2DConditionModel
from safetensors import safe_open
from torch import Tensor, nn
from torch.nn import functional as F

from dsfed.errors import DsfedError
from dsfed.generation.notes import prompt_note, prompt_row
from dsfed.generation.settings import BackboneSpec
from dsfed.io import atomic_path, write_json, write_safetensors
from dsfed.models.checkpoint import load_weights, read_state_dict
from dsfed.provenance import provenance, to_safetensors_metadata

__all__ = ["BACKBONE_CONFIG", "BACKBONE_WEIGHTS", "Backbone", "EmbeddedBackbone", "build_unet", "embedded_folder", "read_metadata",
           "scheduler_config"]

log = logging.getLogger(__name__)

BACKBONE_WEIGHTS = "backbone.safetensors"
BACKBONE_CONFIG = "backbone.json"
FORMAT = "dsfed-embedded-backbone/1"


@runtime_checkable
class Backbone(Protocol):
    """What training and sampling need from a backbone (the embedded one, and Stable Diffusion 1.5).

    Samples live in "model space" (B, in_channels, sample_size, sample_size): pixels in [-1, 1] for the
    embedded backbone (``pixel_space`` True), VAE latents for Stable Diffusion (False: samplers then
    neither clip nor threshold). ``condition_size`` is the side of the condition image the ControlNet
    sees, and of the decoded images (sample_size in pixel space, 8 * sample_size behind SD's VAE).
    """

    unet: UNet2DConditionModel
    scheduler_config: dict[str, Any]

    @property
    def sample_size(self) -> int: ...

    @property
    def in_channels(self) -> int: ...

    @property
    def condition_size(self) -> int: ...

    @property
    def pixel_space(self) -> bool: ...

    def encode_prompt(self, batch: int) -> Tensor:
        """encoder_hidden_states (B, L, D) of the fixed prompt."""
        ...

    def encode_images(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) float in [-1, 1] -> model space (B, in_channels, sample_size, sample_size)."""
        ...

    def decode_samples(self, samples: Tensor) -> Tensor:
        """Model space -> (B, 3, H, W) float in [-1, 1]."""
        ...


def build_unet(spec: BackboneSpec) -> UNet2DConditionModel:
    """A randomly initialised pixel-space ``UNet2DConditionModel`` (3 channels in and out) from ``spec``."""
    return UNet2DConditionModel(
        sample_size=spec.sample_size,
        in_channels=spec.in_channels,
        out_channels=spec.in_channels,
        down_block_types=spec.down_block_types,
        up_block_types=spec.up_block_types,
        block_out_channels=spec.block_out_channels,
        layers_per_block=spec.layers_per_block,
        cross_attention_dim=spec.cross_attention_dim,
        attention_head_dim=spec.attention_head_dim,
        norm_num_groups=spec.norm_num_groups,
    )


def scheduler_config(spec: BackboneSpec) -> dict[str, Any]:
    """The training noise schedule (DDPM) as a plain dict; samplers are built ``from_config`` of it."""
    scheduler = DDPMScheduler(
        num_train_timesteps=spec.num_train_timesteps,
        beta_schedule=spec.beta_schedule,
        prediction_type=spec.prediction_type,
        clip_sample=True,
        clip_sample_range=1.0,
    )
    return {k: v for k, v in dict(scheduler.config).items() if not k.startswith("_")}


class EmbeddedBackbone(nn.Module):
    """Small pixel-space backbone: ``unet`` plus learned prompt embeddings ``prompt`` (1 + P, L, D).

    ``prompt`` plays the role of Stable Diffusion's encoded text prompt: row 0 is the generic prompt, row
    1 + i the task prompt ``spec.prompts[i]``. :meth:`use_prompt` picks the row every call then gets, so
    the UNet is unconditional apart from that task choice and a ControlNet's residuals.
    """

    def __init__(self, spec: BackboneSpec, metadata: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.unet = build_unet(spec)
        self.prompt = nn.Parameter(torch.randn(1 + len(spec.prompts), spec.prompt_tokens, spec.cross_attention_dim))
        self.prompt_index = 0
        self.scheduler_config = scheduler_config(spec)
        self.metadata: dict[str, Any] = metadata or {}

    def prompt_row(self, text: str) -> int:
        """The embedding row of ``text``: 1 + its index in ``spec.prompts`` (case and spacing ignored), else 0."""
        return prompt_row(self.spec.prompts, text)

    def use_prompt(self, text: str) -> int:
        """Make ``text`` the prompt of every later call; a text the backbone did not learn gets the generic
        row 0, with a warning naming the prompts it knows. Returns the row."""
        self.prompt_index = self.prompt_row(text)
        note = prompt_note(text, list(self.spec.prompts))
        if note is not None:
            log.warning("%s", note)
        return self.prompt_index

    @property
    def sample_size(self) -> int:
        return self.spec.sample_size

    @property
    def in_channels(self) -> int:
        return self.spec.in_channels

    @property
    def condition_size(self) -> int:
        return self.spec.sample_size

    @property
    def pixel_space(self) -> bool:
        """True: samples are pixels in [-1, 1]."""
        return True

    def noise_scheduler(self) -> DDPMScheduler:
        """A fresh training scheduler (DDPM) with this backbone's noise schedule."""
        return DDPMScheduler.from_config(self.scheduler_config)

    def encode_prompt(self, batch: int) -> Tensor:
        """(B, L, D): the selected prompt row (:meth:`use_prompt`), expanded (no copy) to the batch."""
        return self.prompt[self.prompt_index : self.prompt_index + 1].expand(batch, -1, -1)

    def encode_prompts(self, rows: Tensor) -> Tensor:
        """(B,) int64 prompt rows -> (B, L, D): one prompt per sample (multi-task training)."""
        return self.prompt[rows]

    def encode_images(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, 3, S, S), resized (antialiased bilinear) only if H, W != S."""
        size = self.sample_size
        if images.shape[-2:] != (size, size):
            images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return images

    def decode_samples(self, samples: Tensor) -> Tensor:
        """Pixel space already: clamp to [-1, 1]."""
        return samples.clamp(-1.0, 1.0)

    def save(self, directory: str | Path, metadata: dict[str, Any] | None = None, dtype: torch.dtype = torch.float16) -> Path:
        """Write ``backbone.safetensors`` (weights as ``dtype``) and ``backbone.json`` into ``directory``.

        ``metadata`` (default: :func:`provenance` of no params) goes into both files, with the spec and
        the noise schedule.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {**(metadata or self.metadata or provenance()), "format": FORMAT}
        config = {**meta, "spec": self.spec.model_dump(mode="json"), "scheduler": self.scheduler_config}
        state = {k: v.detach().to("cpu", dtype).contiguous() for k, v in self.state_dict().items()}
        with atomic_path(directory / BACKBONE_WEIGHTS, overwrite=True) as tmp:
            write_safetensors(state, str(tmp), metadata=to_safetensors_metadata(config))
        write_json(directory / BACKBONE_CONFIG, config)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> EmbeddedBackbone:
        """Read a folder written by :meth:`save`; weights come back as fp32 on the CPU.

        Raises:
            DsfedError: a file is missing or unreadable, the config is invalid, or the weights do not fit.
        """
        directory = Path(directory)
        config_path, weights_path = directory / BACKBONE_CONFIG, directory / BACKBONE_WEIGHTS
        for path in (config_path, weights_path):
            if not path.is_file():
                raise DsfedError(f"{path}: backbone component missing (a backbone folder holds {BACKBONE_CONFIG} and {BACKBONE_WEIGHTS})")
        try:
            config = json.loads(config_path.read_text())
            spec = BackboneSpec.model_validate(config["spec"])
        except Exception as exc:  # noqa: BLE001 - any parse/validation failure is a bad config
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DsfedError(f"{config_path}: invalid backbone config ({reason})") from exc
        metadata = {k: v for k, v in config.items() if k not in ("spec", "scheduler")}
        backbone = cls(spec, metadata)
        state = {k: v.float() for k, v in read_state_dict(weights_path).items()}
        load_weights(backbone, state, strict=True, source=str(weights_path))
        backbone.scheduler_config = {**backbone.scheduler_config, **config.get("scheduler", {})}
        return backbone


def embedded_folder(path: str | Path) -> Path:
    """The backbone folder of ``path``: the released-weights layout nests it in ``backbone/``; accept that
    folder or its parent."""
    path = Path(path)
    return path / "backbone" if (path / "backbone" / BACKBONE_CONFIG).is_file() else path


def read_metadata(path: str | Path) -> dict[str, str]:
    """The str -> str metadata of a safetensors file."""
    with safe_open(str(path), framework="pt") as fh:
        return dict(fh.metadata() or {})
