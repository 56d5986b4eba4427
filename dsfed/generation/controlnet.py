"""The mask ControlNet: built from the backbone's UNet, kept as safetensors, or an official diffusers folder."""

from __future__ import annotations

import inspect
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from diffusers import ControlNetModel, UNet2DConditionModel
from safetensors import safe_open

from dsfed.generation.condition import CONDITION_CHANNELS
from dsfed.io import atomic_path, write_safetensors
from dsfed.models.checkpoint import CheckpointError, load_weights, read_state_dict
from dsfed.provenance import provenance, to_safetensors_metadata

if TYPE_CHECKING:
    from dsfed.generation.backbone import Backbone

__all__ = [
    "EMBEDDING_CHANNELS",
    "LATENT_EMBEDDING_CHANNELS",
    "build_controlnet",
    "condition_embedding_channels",
    "default_embedding_channels",
    "find_weights",
    "load_controlnet",
    "load_official_controlnet",
    "save_controlnet",
]

log = logging.getLogger(__name__)

# One entry: the conditioning embedding then downsamples by 2^(1-1) = 1, so a pixel-space backbone sees
# the condition image at its own sample size (diffusers' default of 4 entries downsamples 8x for SD latents).
EMBEDDING_CHANNELS: tuple[int, ...] = (16,)
# diffusers' default (and the official SD 1.5 ControlNets'): 8x, from 512 px condition images to 64 px latents.
LATENT_EMBEDDING_CHANNELS: tuple[int, ...] = (16, 32, 96, 256)
# UNet config fields a ControlNet copies and must share with the UNet it feeds residuals into
_SHARED_FIELDS = (
    "in_channels", "block_out_channels", "down_block_types", "layers_per_block", "cross_attention_dim", "attention_head_dim"
)
OFFICIAL_LAYOUT = "a diffusers ControlNet folder holds config.json and diffusion_pytorch_model.safetensors (or .bin)"


def condition_embedding_channels(downsampling: int) -> tuple[int, ...]:
    """The conditioning embedding's channels for condition images ``downsampling`` times the sample side:
    (16,) at 1 (pixel space), (16, 32) at 2, ..., diffusers' (16, 32, 96, 256) at 8 (SD's VAE)."""
    steps = max(downsampling, 1).bit_length() - 1
    if downsampling < 1 or 2**steps != downsampling or steps >= len(LATENT_EMBEDDING_CHANNELS):
        raise ValueError(f"condition downsampling {downsampling}: must be 1, 2, 4 or 8")
    return LATENT_EMBEDDING_CHANNELS[: steps + 1]


def _split(model: UNet2DConditionModel | Backbone) -> tuple[UNet2DConditionModel, int | None]:
    """(the UNet, condition_size // sample_size) for a backbone; (the UNet, None) for a bare UNet."""
    if isinstance(model, UNet2DConditionModel):
        return model, None
    return model.unet, model.condition_size // model.sample_size


def default_embedding_channels(model: UNet2DConditionModel | Backbone) -> tuple[int, ...]:
    """The embedding channels a ControlNet for ``model`` needs.

    A backbone says how much larger its condition images are than its samples. A bare UNet does not:
    3 input channels means pixel space (:data:`EMBEDDING_CHANNELS`), anything else latents behind SD's
    8x VAE (:data:`LATENT_EMBEDDING_CHANNELS`); pass the backbone for any other VAE.
    """
    unet, factor = _split(model)
    if factor is None:
        return EMBEDDING_CHANNELS if int(unet.config.in_channels) == 3 else LATENT_EMBEDDING_CHANNELS
    return condition_embedding_channels(factor)


def _check_downsampling(channels: tuple[int, ...], factor: int | None, source: str) -> None:
    if factor is not None and 2 ** (len(channels) - 1) != factor:
        raise CheckpointError(
            f"{source}: conditioning_embedding_out_channels {list(channels)} downsample the condition image "
            f"{2 ** (len(channels) - 1)}x, but the backbone's condition images are {factor}x its samples "
            f"(needs {list(condition_embedding_channels(factor))})"
        )


def find_weights(folder: str | Path, safetensors_name: str, bin_name: str) -> tuple[Path, str | None] | None:
    """(weights file, variant) in a diffusers/transformers model folder, or None: safetensors before .bin,
    the plain file before its ``fp16`` variant (e.g. ``diffusion_pytorch_model.fp16.safetensors``)."""
    folder = Path(folder)
    for variant in (None, "fp16"):
        for name in (safetensors_name, bin_name):
            if variant is not None:
                stem, _, suffix = name.rpartition(".")
                name = f"{stem}.{variant}.{suffix}"
            if (folder / name).is_file():
                return folder / name, variant
    return None


def build_controlnet(
    unet: UNet2DConditionModel | Backbone,
    init: str | Path | None = None,
    embedding_channels: tuple[int, ...] | None = None,
) -> ControlNetModel:
    """A ControlNet shaped after ``unet`` (a UNet, or a backbone: then its UNet): its encoder copied from
    the UNet (zero convolutions at zero), or the weights in ``init``, loaded strictly.

    Args:
        init: a generic ControlNet's safetensors / .pth, or an official diffusers ControlNet folder
            (see :func:`load_official_controlnet`; its own config then decides the embedding channels).
        embedding_channels: the conditioning embedding's channels; default
            :func:`default_embedding_channels` ((16,) in pixel space, (16, 32, 96, 256) behind SD's VAE).

    Raises:
        CheckpointError (a DsfedError): ``init`` is missing, unreadable, or does not fit (every missing,
        unexpected and mis-shaped key listed, naming the file), or its embedding does not downsample the
        condition image to the backbone's sample size.
    """
    if init is not None and Path(init).is_dir():
        return load_official_controlnet(init, unet)
    net, factor = _split(unet)
    channels = tuple(embedding_channels) if embedding_channels is not None else default_embedding_channels(unet)
    _check_downsampling(channels, factor, str(init) if init is not None else "embedding_channels")
    controlnet = ControlNetModel.from_unet(
        net,
        conditioning_embedding_out_channels=channels,
        conditioning_channels=CONDITION_CHANNELS,
    )
    if init is not None:
        state = {k: v.float() for k, v in read_state_dict(init).items()}
        load_weights(controlnet, state, strict=True, source=str(init))
        log.info("ControlNet initialised from %s", init)
    return controlnet


def save_controlnet(
    controlnet: ControlNetModel, path: str | Path, metadata: dict[str, Any] | None = None, dtype: torch.dtype = torch.float16
) -> Path:
    """Write the ControlNet's weights (as ``dtype``) to ``path`` atomically, ``metadata`` in the header."""
    path = Path(path)
    meta = {**(metadata or provenance()), "format": "dsfed-controlnet/1",
            "conditioning_embedding_out_channels": list(controlnet.config.conditioning_embedding_out_channels)}
    state = {k: v.detach().to("cpu", dtype).contiguous() for k, v in controlnet.state_dict().items()}
    with atomic_path(path, overwrite=True) as tmp:
        write_safetensors(state, str(tmp), metadata=to_safetensors_metadata(meta))
    return path


def load_controlnet(unet: UNet2DConditionModel | Backbone, path: str | Path) -> ControlNetModel:
    """A ControlNet for ``unet`` (a UNet or a backbone) with the weights in ``path`` (fp32, CPU); see
    :func:`build_controlnet`. A folder is loaded as an official diffusers ControlNet.

    The conditioning embedding's channels come from the file's metadata when it records them, else
    :func:`default_embedding_channels`.
    """
    if Path(path).is_dir():
        return load_official_controlnet(path, unet)
    channels = default_embedding_channels(unet)
    if Path(path).suffix == ".safetensors" and Path(path).is_file():
        with safe_open(str(path), framework="pt") as fh:
            recorded = (fh.metadata() or {}).get("conditioning_embedding_out_channels")
        if recorded:
            channels = tuple(json.loads(recorded))
    return build_controlnet(unet, init=path, embedding_channels=channels)


def _norm(value: Any) -> Any:
    return tuple(_norm(v) for v in value) if isinstance(value, (list, tuple)) else value


def _show(value: Any) -> str:
    return json.dumps(value, default=str)


def load_official_controlnet(path: str | Path, unet: UNet2DConditionModel | Backbone) -> ControlNetModel:
    """An official diffusers ControlNet folder (e.g. lllyasviel/sd-controlnet-seg: ``config.json`` +
    ``diffusion_pytorch_model.safetensors``), loaded locally in fp32 on the CPU as an initialisation.

    Its config must fit ``unet`` (a UNet, or a backbone: then the embedding's downsampling is checked
    too): the UNet fields it copies (:data:`_SHARED_FIELDS`: block_out_channels, cross_attention_dim...)
    equal, and 3 conditioning channels. ``.bin`` weights load with ``torch.load(weights_only=True)``.

    Raises:
        CheckpointError (a DsfedError): a file is missing, the config is unreadable or names a mismatched
        field, or the weights do not load strictly (missing, unexpected or mis-shaped keys).
    """
    folder = Path(path)
    config_path = folder / "config.json"
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: not a ControlNet folder; {OFFICIAL_LAYOUT}")
    if not config_path.is_file():
        raise CheckpointError(f"{config_path}: missing; {OFFICIAL_LAYOUT}")
    found = find_weights(folder, "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
    if found is None:
        raise CheckpointError(f"{folder / 'diffusion_pytorch_model.safetensors'}: missing; {OFFICIAL_LAYOUT}")
    try:
        config = json.loads(config_path.read_text())
        if not isinstance(config, dict):
            raise ValueError("not a JSON object")
    except Exception as exc:  # noqa: BLE001 - any parse failure is a bad config
        raise CheckpointError(f"{config_path}: unreadable ControlNet config ({exc})") from exc
    if config.get("_class_name", "ControlNetModel") != "ControlNetModel":
        raise CheckpointError(f"{config_path}: a {config['_class_name']}, not a ControlNetModel")
    net, factor = _split(unet)
    defaults = inspect.signature(ControlNetModel.__init__).parameters

    def field(name: str) -> Any:
        return _norm(config.get(name, defaults[name].default))

    mismatched = [
        f"{name} is {_show(field(name))} in the ControlNet, {_show(_norm(net.config[name]))} in the UNet"
        for name in _SHARED_FIELDS
        if field(name) != _norm(net.config[name])
    ]
    if field("conditioning_channels") != CONDITION_CHANNELS:
        mismatched.append(
            f"conditioning_channels is {field('conditioning_channels')}, the condition image has {CONDITION_CHANNELS}"
        )
    if mismatched:
        raise CheckpointError(f"{config_path}: ControlNet does not fit the backbone's UNet: {'; '.join(mismatched)}")
    _check_downsampling(tuple(field("conditioning_embedding_out_channels")), factor, str(config_path))
    weights, variant = found
    try:
        controlnet, info = ControlNetModel.from_pretrained(
            str(folder), torch_dtype=torch.float32, use_safetensors=weights.suffix == ".safetensors", variant=variant,
            local_files_only=True, low_cpu_mem_usage=False, output_loading_info=True,
        )
    except Exception as exc:  # noqa: BLE001 - any loader failure names the file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{weights}: cannot load the ControlNet ({reason})") from exc
    problems = [f"{len(info[k])} {k.replace('_', ' ')} [{', '.join(map(str, info[k]))}]"
                for k in ("missing_keys", "unexpected_keys", "mismatched_keys") if info.get(k)]
    if problems:
        raise CheckpointError(f"{weights}: does not fit ControlNetModel: {'; '.join(problems)}")
    log.info("ControlNet initialised from the official folder %s", folder)
    return controlnet
