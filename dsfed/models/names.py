"""Registered model names and what options each takes, importable without torch (config validation uses them)."""

from __future__ import annotations

MODEL_NAMES = ("nnunet", "sam_demo", "sam_vit_b", "sam_vit_h", "sam_vit_l", "tinysam", "tinysam_demo", "unet", "unet_lite0")

PROMPTABLE = ("sam_demo", "sam_vit_b", "sam_vit_h", "sam_vit_l", "tinysam", "tinysam_demo")
"""Models that take box prompts (SAM's prompt encoder)."""

ADAPTABLE = ("sam_demo", "sam_vit_b", "sam_vit_h", "sam_vit_l")
"""Models whose image encoder is SAM's ViT, which Medical-SAM-Adapter blocks fit (TinySAM's TinyViT does not)."""

SIDE_MULTIPLE = {"unet_lite0": 32, "nnunet": 16, "unet": 16}
"""Input sides a model needs a multiple of (EfficientNet's fixed padding, the U-Nets' downsampling)."""


def option_problems(model: str, input_size: int | None, prompt: str = "none", adapter: str = "none") -> list[str]:
    """``field: message`` lines for options ``model`` cannot take (empty when it takes them all)."""
    problems = []
    if prompt != "none" and model not in PROMPTABLE:
        problems.append(f"prompt: {model} takes no prompts (box prompts: {', '.join(PROMPTABLE)})")
    if adapter != "none" and model not in ADAPTABLE:
        problems.append(f"adapter: {adapter!r} needs SAM's ViT image encoder ({', '.join(ADAPTABLE)}), not {model}")
    multiple = SIDE_MULTIPLE.get(model)
    if input_size is not None and multiple and input_size % multiple:
        problems.append(f"input_size: {model} needs a multiple of {multiple}, got {input_size}")
    return problems
