"""Model registry: name -> builder of a :class:`Segmenter` (SAM family, TinySAM, U-Net family)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from torch import Tensor

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
    """

    num_classes: int
    output_size: int
    input_size: int | None = None
    prompt: PromptMode = "none"
    checkpoint: Path | None = None
    strict: bool = True


def _fit_class_head(model: Segmenter, state: dict[str, Tensor], source: str) -> dict[str, Tensor]:
    """``state`` with the model's own freshly initialised class head when the checkpoint's has another
    number of classes (a foundation trained for other classes), with a warning naming what was reset."""
    keys: tuple[str, ...] = getattr(model, "class_head_keys", ())
    own = model.state_dict()
    if not any(k in state and state[k].shape != own[k].shape for k in keys):
        return state
    log.warning("%s: its class head has %d classes and the task %d: %s re-initialised, everything else loads",
                source, state[keys[0]].shape[0], model.num_classes, ", ".join(keys))
    return {**state, **{k: own[k] for k in keys}}


def _load_checkpoint(model: Segmenter, opts: ModelOptions) -> None:
    if opts.checkpoint is None:
        return
    state = _fit_class_head(model, read_state_dict(opts.checkpoint), str(opts.checkpoint))
    if isinstance(model, SamSegmenter) and not any(k.startswith(("sam.", "head.")) for k in state):
        state = adapt_state_dict_to_size(state, model.sam)
        load_weights(model.sam, state, strict=opts.strict, source=str(opts.checkpoint))
    else:
        load_weights(model, state, strict=opts.strict, source=str(opts.checkpoint))


def _sam_family(preset: SamPreset, opts: ModelOptions) -> Segmenter:
    model = SamSegmenter(build_sam(preset, opts.input_size), opts.num_classes, opts.output_size, opts.prompt)
    _load_checkpoint(model, opts)
    return model


def _dense(net_builder: Callable[[int], object], opts: ModelOptions) -> Segmenter:
    if opts.prompt != "none":
        raise ValueError(f"prompt {opts.prompt!r}: U-Net models take no prompts")
    model = DenseSegmenter(net_builder(opts.num_classes), opts.num_classes, opts.input_size or 128, opts.output_size)  # type: ignore[arg-type]
    _load_checkpoint(model, opts)
    return model


MODELS: dict[str, Callable[[ModelOptions], Segmenter]] = {
    **{name: partial(_sam_family, preset) for name, preset in sam_presets().items()},
    "unet": partial(_dense, build_unet),
    "nnunet": partial(_dense, build_dynunet),
}


def model_names() -> list[str]:
    return sorted(MODELS)


def build_model(name: str, num_classes: int, output_size: int, **options: object) -> Segmenter:
    """Build a registered model, e.g. ``build_model("tinysam_demo", num_classes=2, output_size=64)``.

    Keyword options are :class:`ModelOptions` fields (``input_size``, ``prompt``, ``checkpoint``, ``strict``).
    """
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r} (known: {', '.join(model_names())})")
    return MODELS[name](ModelOptions(num_classes=num_classes, output_size=output_size, **options))  # type: ignore[arg-type]
