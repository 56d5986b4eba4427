"""Model cards: ``model.json`` beside ``model.safetensors`` says how to rebuild the segmenter that wrote them.

A card is ``{"model": registry name, "options": {"input_size", "prompt", "adapter", ...}, "parameters": int, ...}``
(the federated stages write the method's whole spec as ``options``; only the build fields are read).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from dsfed.errors import DsfedError
from dsfed.models.checkpoint import load_weights, read_state_dict
from dsfed.models.registry import build_model
from dsfed.models.segmenter import Segmenter

__all__ = ["architecture", "build_architecture", "build_carded_model", "card_architecture", "load_carded_model", "model_card"]


def model_card(model: str, input_size: int | None, prompt: str, parameters: int, **extra: Any) -> dict[str, Any]:
    """The card written beside a model's weights."""
    return {"model": model, "options": {"input_size": input_size, "prompt": prompt}, "parameters": parameters, **extra}


def architecture(model: str, input_size: int | None = None, prompt: str = "none", adapter: str = "none") -> dict[str, Any]:
    """What builds an empty segmenter, as JSON (sent to clients that score weights they receive)."""
    return {"model": model, "input_size": input_size, "prompt": prompt, "adapter": adapter}


def card_architecture(folder: str | Path, card: str = "model.json") -> dict[str, Any]:
    """The :func:`architecture` of the model whose card is ``folder/card``."""
    card_path = Path(folder) / card
    if not card_path.is_file():
        raise DsfedError(f"{card_path}: no model card (run the stage that writes it first)")
    info = json.loads(card_path.read_text())
    options = info.get("options", {})
    if "model" not in info:
        raise DsfedError(f"{card_path}: no 'model' field")
    return architecture(info["model"], options.get("input_size"), options.get("prompt", "none"), options.get("adapter", "none"))


def build_architecture(arch: dict[str, Any], num_classes: int, output_size: int) -> Segmenter:
    """An empty segmenter of :func:`architecture` ``arch`` (no weights loaded)."""
    return build_model(arch["model"], num_classes=num_classes, output_size=output_size, input_size=arch.get("input_size"),
                       prompt=arch.get("prompt", "none"), adapter=arch.get("adapter", "none"))


def build_carded_model(folder: str | Path, num_classes: int, output_size: int, card: str = "model.json") -> Segmenter:
    """The segmenter described by ``folder/card``, freshly initialised (no weights loaded)."""
    try:
        return build_architecture(card_architecture(folder, card), num_classes, output_size)
    except KeyError as exc:
        raise DsfedError(f"{Path(folder) / card}: {exc}") from None


def load_carded_model(folder: str | Path, num_classes: int, output_size: int, weights: str = "model.safetensors",
                      card: str = "model.json", device: torch.device | str = "cpu") -> Segmenter:
    """Rebuild the segmenter described by ``folder/card`` and load ``folder/weights`` strictly (eval mode)."""
    folder = Path(folder)
    model = build_carded_model(folder, num_classes, output_size, card)
    load_weights(model, read_state_dict(folder / weights), strict=True, source=str(folder / weights))
    return model.to(device).eval()
