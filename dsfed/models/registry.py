"""Model registry: name -> builder of a :class:`Segmenter` (SAM family, TinySAM, U-Net family)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from torch import Tensor
from torch.nn import Module

from dsfed.models.adapters import ADAPTERS, FROZEN_BY_ADAPTERS, add_msa_adapters
from dsfed.models.checkpoint import load_weights, read_state_dict
from dsfed.models.dense import DenseSegmenter, build_dynunet, build_unet
from dsfed.models.sam import SamPreset, SamSegmenter, adapt_state_dict_to_size, build_sam, sam_presets
from dsfed.models.segmenter import PromptMode, Segmenter

__all__ = ["MODELS", "ModelOptions", "build_model", "model_names"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelOptions:
    """What every builder receives.

    Attributes:
        num_classes: C. output_size: Sm, side of the returned logits.
        input_size: side the model runs at; None for the preset's own (SAM presets: their encoder
            size; U-Nets: 128).
        prompt: 'none' or 'box' (SAM family only).
        checkpoint: a local ``.pth``/``.safetensors``: official SAM/TinySAM/MobileSAM weights (loaded into
            ``.sam``, resized to ``input_size`` where needed) or a dsfed segmenter's own weights.
        strict: refuse a checkpoint that does not fit exactly (every key listed); False loads what fits.
        classes: the task's class names; a checkpoint that records the classes its head was trained for
            (``classes`` metadata) gives those channels by name, and is re-initialised when it lacks one.
        adapter: 'msa' puts Medical-SAM-Adapter blocks in a SAM ViT encoder and freezes the rest of it
            (FedMSA, :mod:`dsfed.models.adapters`); a checkpoint without adapters loads around them.
    """

    num_classes: int
    output_size: int
    input_size: int | None = None
    prompt: PromptMode = "none"
    checkpoint: Path | None = None
    strict: bool = True
    classes: tuple[str, ...] | None = None
    adapter: str = "none"


def _fit_class_head(model: Segmenter, state: dict[str, Tensor], opts: ModelOptions) -> dict[str, Tensor]:
    """``state`` with the class head the task needs: the checkpoint's channels of the task's classes when it
    records the classes it knows and has them all (picked by name), else the model's own freshly initialised
    head when the checkpoint's has other classes, with a warning naming what was reset."""
    from dsfed.heads import checkpoint_classes

    keys: tuple[str, ...] = getattr(model, "class_head_keys", ())
    if not keys or not all(k in state for k in keys):
        return state
    own, source = model.state_dict(), str(opts.checkpoint)
    known = checkpoint_classes(opts.checkpoint) if opts.checkpoint is not None else None
    if known is not None and opts.classes is not None:
        if list(opts.classes) == known:
            return state
        if all(name in known for name in opts.classes):
            rows = [known.index(name) for name in opts.classes]
            log.info("%s: head channels of %s picked by name from %s", source, list(opts.classes), known)
            return {**state, **{k: state[k][rows] for k in keys}}
        log.warning("%s: its class head knows %s, not %s: %s re-initialised, everything else loads",
                    source, known, list(opts.classes), ", ".join(keys))
        return {**state, **{k: own[k] for k in keys}}
    if not any(state[k].shape != own[k].shape for k in keys):
        return state
    log.warning("%s: its class head has %d classes and the task %d: %s re-initialised, everything else loads",
                source, state[keys[0]].shape[0], model.num_classes, ", ".join(keys))
    return {**state, **{k: own[k] for k in keys}}


def _fill_adapters(sam: Module, state: dict[str, Tensor], source: str) -> dict[str, Tensor]:
    """``state`` (keys of ``sam``, the official layout) plus its own freshly initialised adapters when the
    checkpoint has none."""
    own = sam.state_dict()
    missing = [k for k in own if ".adapter." in k and k not in state]
    if missing:
        log.info("%s: no adapter weights; %d adapter tensors start from their initialisation", source, len(missing))
    return {**state, **{k: own[k] for k in missing}}


def _load_checkpoint(model: Segmenter, opts: ModelOptions) -> None:
    if opts.checkpoint is None:
        return
    source = str(opts.checkpoint)
    state = _fit_class_head(model, read_state_dict(opts.checkpoint), opts)
    if not isinstance(model, SamSegmenter):
        load_weights(model, state, strict=opts.strict, source=source)
        return
    # official SAM/TinySAM files hold ``.sam``'s keys; dsfed's own segmenters hold ``sam.``-prefixed ones and a head
    official = not any(k.startswith(("sam.", "head.")) for k in state)
    inner = state if official else {k.removeprefix("sam."): v for k, v in state.items() if k.startswith("sam.")}
    fitted = _fill_adapters(model.sam, adapt_state_dict_to_size(inner, model.sam), source)
    resized = [k for k, v in inner.items() if v.shape != fitted[k].shape]
    if resized:
        log.info("%s: %s resized to the %d px input", source, ", ".join(resized), model.sam.image_encoder.img_size)
    if official:
        load_weights(model.sam, fitted, strict=opts.strict, source=source)
    else:
        load_weights(model, {**state, **{"sam." + k: v for k, v in fitted.items()}}, strict=opts.strict, source=source)


def _sam_family(preset: SamPreset, opts: ModelOptions) -> Segmenter:
    model = SamSegmenter(build_sam(preset, opts.input_size), opts.num_classes, opts.output_size, opts.prompt)
    if opts.adapter not in ADAPTERS:
        raise ValueError(f"adapter {opts.adapter!r}: choose one of {', '.join(ADAPTERS)}")
    if opts.adapter == "msa":
        add_msa_adapters(model.sam.image_encoder)
        model.frozen_keys = (FROZEN_BY_ADAPTERS,)
    _load_checkpoint(model, opts)
    return model


def _dense(net_builder: Callable[[int], object], opts: ModelOptions) -> Segmenter:
    if opts.prompt != "none":
        raise ValueError(f"prompt {opts.prompt!r}: U-Net models take no prompts")
    if opts.adapter != "none":
        raise ValueError(f"adapter {opts.adapter!r}: only SAM's ViT encoders take adapters")
    model = DenseSegmenter(net_builder(opts.num_classes), opts.num_classes, opts.input_size or 128, opts.output_size)  # type: ignore[arg-type]
    _load_checkpoint(model, opts)
    return model


def _unet_lite0(opts: ModelOptions) -> Segmenter:
    """U-Net on the ImageNet EfficientNet-Lite0 encoder; sides must be multiples of 32."""
    from dsfed.models.lite import LITE_MEAN, LITE_STD, build_unet_lite0

    size = opts.input_size or 128
    if size % 32:
        raise ValueError(f"unet_lite0: input_size {size} must be a multiple of 32 (EfficientNet's fixed padding)")
    if opts.prompt != "none" or opts.adapter != "none":
        raise ValueError("unet_lite0 takes no prompts and no adapters")
    # ImageNet weights only when no checkpoint replaces them anyway (a saved model, the federated global)
    net = build_unet_lite0(opts.num_classes, pretrained=opts.checkpoint is None)
    model = DenseSegmenter(net, opts.num_classes, size, opts.output_size, standardise=(LITE_MEAN / 255, LITE_STD / 255))
    _load_checkpoint(model, opts)
    return model


MODELS: dict[str, Callable[[ModelOptions], Segmenter]] = {
    **{name: partial(_sam_family, preset) for name, preset in sam_presets().items()},
    "unet": partial(_dense, build_unet),
    "nnunet": partial(_dense, build_dynunet),
    "unet_lite0": _unet_lite0,
}


def model_names() -> list[str]:
    return sorted(MODELS)


def build_model(name: str, num_classes: int, output_size: int, **options: object) -> Segmenter:
    """Build a registered model, e.g. ``build_model("tinysam_demo", num_classes=2, output_size=64)``.

    Keyword options are :class:`ModelOptions` fields (``input_size``, ``prompt``, ``checkpoint``, ``strict``,
    ``classes``, ``adapter``).
    """
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r} (known: {', '.join(model_names())})")
    return MODELS[name](ModelOptions(num_classes=num_classes, output_size=output_size, **options))  # type: ignore[arg-type]
