"""Stable Diffusion 1.5 as the frozen backbone: a local diffusers folder, latent space, one fixed prompt."""

from __future__ import annotations

import gc
import inspect
import json
import logging
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from torch import Tensor, nn
from torch.nn import functional as F

from dsfed.errors import DsfedError
from dsfed.generation.controlnet import find_weights, load_official_controlnet

__all__ = [
    "DEFAULT_PROMPT",
    "SD15_LAYOUT",
    "StableDiffusionBackbone",
    "check_layout",
    "load_official_controlnet",
    "read_scheduler_config",
]

log = logging.getLogger(__name__)

DEFAULT_PROMPT = "a retinal fundus photograph"
SD15_LAYOUT = (
    "a Stable Diffusion 1.5 folder (diffusers format) holds model_index.json, unet/ and vae/ (config.json + "
    "diffusion_pytorch_model.safetensors or .bin), text_encoder/ (config.json + model.safetensors or "
    "pytorch_model.bin), tokenizer/ (vocab.json + merges.txt, or tokenizer.json) and scheduler/scheduler_config.json"
)
# component -> (safetensors name, .bin name) of its weights; None: no weights
_WEIGHTS: dict[str, tuple[str, str] | None] = {
    "unet": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
    "vae": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
    "text_encoder": ("model.safetensors", "pytorch_model.bin"),
    "tokenizer": None,
    "scheduler": None,
}
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _missing(root: Path, what: str) -> DsfedError:
    return DsfedError(f"{root}: {what} is missing; {SD15_LAYOUT}")


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def check_layout(path: str | Path) -> dict[str, tuple[Path, str | None]]:
    """Check that ``path`` holds every component of the official SD 1.5 diffusers layout.

    Returns:
        unet / vae / text_encoder -> (weights file, variant): safetensors preferred over .bin, and the
        plain file over an ``fp16`` variant.

    Raises:
        DsfedError: one line naming the first missing file or folder and what the folder must hold.
    """
    root = Path(path)
    if not root.is_dir():
        raise DsfedError(f"{root}: not a folder; {SD15_LAYOUT}")
    if not (root / "model_index.json").is_file():
        raise _missing(root, "model_index.json")
    weights: dict[str, tuple[Path, str | None]] = {}
    for component, names in _WEIGHTS.items():
        folder = root / component
        if not folder.is_dir():
            raise _missing(root, f"{component}/")
        if component == "scheduler":
            if not (folder / "scheduler_config.json").is_file():
                raise _missing(root, "scheduler/scheduler_config.json")
            continue
        if component == "tokenizer":
            if not (folder / "tokenizer.json").is_file():
                for name in ("vocab.json", "merges.txt"):
                    if not (folder / name).is_file():
                        raise _missing(root, f"tokenizer/{name}")
            continue
        assert names is not None
        if not (folder / "config.json").is_file():
            raise _missing(root, f"{component}/config.json")
        found = find_weights(folder, *names)
        if found is None:
            raise _missing(root, f"{component}/{names[0]} (or {names[1]})")
        weights[component] = found
    return weights


def read_scheduler_config(path: str | Path) -> dict[str, Any]:
    """The noise schedule of ``scheduler/scheduler_config.json`` (SD 1.5: a PNDM config) as a DDPM config dict.

    Keys DDPM does not know (``skip_prk_steps``, ``set_alpha_to_one``...) are dropped, missing ones take
    DDPM's defaults (``prediction_type`` "epsilon"), and ``clip_sample`` / ``thresholding`` are off: the
    samples are VAE latents, not pixels in [-1, 1].
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
        known = inspect.signature(DDPMScheduler.__init__).parameters
        scheduler = DDPMScheduler(**{k: v for k, v in raw.items() if k in known and k != "self"})
    except Exception as exc:  # noqa: BLE001 - unreadable JSON or a schedule diffusers refuses
        raise DsfedError(f"{path}: invalid scheduler config ({_reason(exc)})") from exc
    config = {k: v for k, v in dict(scheduler.config).items() if not k.startswith("_")}
    return {**config, "clip_sample": False, "thresholding": False}


def _load(root: Path, component: str, load: Any, weights: tuple[Path, str | None], **kwargs: Any) -> Any:
    file, variant = weights
    try:
        return load(
            str(root / component),
            use_safetensors=file.suffix == ".safetensors",
            variant=variant,
            local_files_only=True,
            **kwargs,
        )
    except Exception as exc:  # noqa: BLE001 - any loader failure names the component
        raise DsfedError(f"{file}: cannot load {component} ({_reason(exc)})") from exc


def _encode_text(root: Path, weights: tuple[Path, str | None], prompt: str) -> Tensor:
    """The fixed prompt through SD's CLIP tokenizer and text encoder (fp32, CPU): (1, 77, D) last hidden state."""
    from transformers import CLIPTextModel, CLIPTokenizer  # imported on use: only the SD backbone needs it

    try:
        tokenizer = CLIPTokenizer.from_pretrained(str(root / "tokenizer"), local_files_only=True)
    except Exception as exc:  # noqa: BLE001
        raise DsfedError(f"{root / 'tokenizer'}: cannot load the CLIP tokenizer ({_reason(exc)})") from exc
    text_encoder = _load(root, "text_encoder", CLIPTextModel.from_pretrained, weights, dtype=torch.float32)
    length = int(text_encoder.config.max_position_embeddings)  # 77 for SD 1.5 (= its tokenizer's model_max_length)
    if len(tokenizer(prompt).input_ids) > length:
        log.warning("prompt %r is longer than %d tokens; the text encoder sees it truncated", prompt, length)
    ids = tokenizer(prompt, padding="max_length", max_length=length, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        embeds = text_encoder(ids).last_hidden_state.detach().clone()
    del text_encoder, tokenizer
    gc.collect()
    return embeds


class StableDiffusionBackbone(nn.Module):
    """Stable Diffusion 1.5: ``unet`` on VAE latents, ``vae`` (frozen, its encoder's mean only), and the
    fixed prompt's CLIP embedding ``prompt_embeds`` (1, 77, 768) computed once; the text encoder is not kept.

    Model space is latents (B, 4, 64, 64) for SD 1.5; images and condition images are at
    ``condition_size`` (512 px), the VAE's 8x upsampling of the latent side.
    """

    def __init__(
        self,
        unet: UNet2DConditionModel,
        vae: AutoencoderKL,
        prompt_embeds: Tensor,
        scheduler_config: dict[str, Any],
        prompt: str = DEFAULT_PROMPT,
        source: str | None = None,
    ) -> None:
        """
        Args:
            prompt_embeds: (1, L, D) with D == ``unet.config.cross_attention_dim``.

        Raises:
            DsfedError: the UNet's input channels differ from the VAE's latent channels, or the prompt
            embedding's width from the UNet's cross-attention width.
        """
        super().__init__()
        where = source or "StableDiffusionBackbone"
        if int(unet.config.in_channels) != int(vae.config.latent_channels):
            raise DsfedError(
                f"{where}: unet in_channels {unet.config.in_channels} != "
                f"vae latent_channels {vae.config.latent_channels}"
            )
        width = int(unet.config.cross_attention_dim)
        if prompt_embeds.ndim != 3 or prompt_embeds.shape[0] != 1 or prompt_embeds.shape[-1] != width:
            raise DsfedError(
                f"{where}: prompt embedding {tuple(prompt_embeds.shape)} does not fit the unet "
                f"(cross_attention_dim {width}); text_encoder and unet are from different models"
            )
        self.unet = unet
        self.vae = vae
        self.vae.enable_slicing()  # one image at a time: bounded memory at 512 px, and batch-independent results
        self.register_buffer("prompt_embeds", prompt_embeds.detach().to(unet.dtype))
        self.scheduler_config = dict(scheduler_config)
        self.prompt = prompt
        self.metadata: dict[str, Any] = {"kind": "sd15", "source": source, "prompt": prompt}
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        prompt: str = DEFAULT_PROMPT,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> StableDiffusionBackbone:
        """Load a local SD 1.5 folder in diffusers format (nothing is downloaded); frozen, eval mode.

        ``.bin`` weights load with ``torch.load(weights_only=True)`` (diffusers and transformers do so);
        safetensors are preferred. The UNet (and the VAE unless its config asks for fp32 via
        ``force_upcast``) are cast to ``dtype``; the prompt is encoded in fp32 on the CPU. With a
        ``dtype`` other than float32, train and sample with ``amp`` (bf16 autocast; bfloat16 checked on
        the CPU, float16 only makes sense on CUDA).

        Raises:
            DsfedError: a component is missing (named, see :data:`SD15_LAYOUT`), unreadable, or the
            components do not fit each other.
        """
        if dtype not in _DTYPES:
            raise DsfedError(f"{path}: dtype {dtype} not supported (choose float32, float16 or bfloat16)")
        root = Path(path)
        weights = check_layout(root)
        config = read_scheduler_config(root / "scheduler" / "scheduler_config.json")
        common = {"low_cpu_mem_usage": False}  # True needs accelerate (not a dependency); the models are small enough
        unet = _load(root, "unet", UNet2DConditionModel.from_pretrained, weights["unet"], torch_dtype=dtype, **common)
        vae = _load(root, "vae", AutoencoderKL.from_pretrained, weights["vae"], torch_dtype=torch.float32, **common)
        if not vae.config.force_upcast:
            vae.to(dtype)
        embeds = _encode_text(root, weights["text_encoder"], prompt)
        backbone = cls(unet, vae, embeds, config, prompt=prompt, source=str(root))
        log.info("Stable Diffusion backbone from %s: latents %d x %d^2, condition %d px, prompt %r",
                 root, backbone.in_channels, backbone.sample_size, backbone.condition_size, prompt)
        return backbone.to(device)

    @property
    def sample_size(self) -> int:
        """Latent side (64 for SD 1.5)."""
        size = self.unet.config.sample_size
        return int(size[0] if isinstance(size, (list, tuple)) else size)

    @property
    def in_channels(self) -> int:
        """Latent channels (4)."""
        return int(self.unet.config.in_channels)

    @property
    def downsampling(self) -> int:
        """The VAE's spatial factor: 2^(len(block_out_channels) - 1) (8 for SD 1.5)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def condition_size(self) -> int:
        """Side of images and condition images: sample_size * downsampling (512 for SD 1.5)."""
        return self.sample_size * self.downsampling

    @property
    def pixel_space(self) -> bool:
        """False: samples are VAE latents (not bounded by [-1, 1])."""
        return False

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    def encode_prompt(self, batch: int) -> Tensor:
        """(B, 77, D): the fixed prompt's embedding, expanded (no copy) to the batch."""
        embeds: Tensor = self.get_buffer("prompt_embeds")
        return embeds.expand(batch, -1, -1)

    @torch.no_grad()
    def encode_images(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) in [-1, 1] -> latents (B, 4, S, S) float32: the VAE posterior's mean times the
        scaling factor (deterministic). Images are first resized (antialiased bilinear) to condition_size
        if H, W differ from it."""
        size = self.condition_size
        if images.shape[-2:] != (size, size):
            images = F.interpolate(
                images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False
            )
        latents = self.vae.encode(images.to(self.vae.dtype)).latent_dist.mean
        shift = self.vae.config.shift_factor
        if shift is not None:
            latents = latents - shift
        return (latents * self.scaling_factor).float()

    @torch.no_grad()
    def decode_samples(self, samples: Tensor) -> Tensor:
        """Latents (B, 4, S, S) -> (B, 3, condition_size, condition_size) float32 clamped to [-1, 1]."""
        latents = samples / self.scaling_factor
        shift = self.vae.config.shift_factor
        if shift is not None:
            latents = latents + shift
        return self.vae.decode(latents.to(self.vae.dtype)).sample.float().clamp(-1.0, 1.0)
