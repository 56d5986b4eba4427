"""Writing what a server stage produced: weights + model card, a metrics JSON, and dvclive curves."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from dsfed.io import atomic_path, write_json, write_safetensors
from dsfed.models import Segmenter
from dsfed.models.card import model_card

__all__ = ["save_model", "write_curve"]


def save_model(folder: Path, model: Segmenter, name: str, input_size: int | None, stem: str = "model", **extra: Any) -> dict[str, Any]:
    """``folder/<stem>.safetensors`` (fp32) and ``folder/<stem>.json`` (the card); returns the card."""
    folder.mkdir(parents=True, exist_ok=True)
    card = model_card(name, input_size, model.prompt, model.num_parameters(), **extra)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(folder / f"{stem}.safetensors", overwrite=True) as tmp:
        write_safetensors(state, str(tmp), metadata={"model": name})
    write_json(folder / f"{stem}.json", card)
    return card


def write_curve(folder: Path, history: list[dict[str, Any]], step: str) -> None:
    """``folder`` as a dvclive directory: one step per history record, every finite number logged."""
    from dvclive import Live

    with atomic_path(folder, overwrite=True) as tmp:
        with Live(dir=str(tmp), save_dvc_exp=False, dvcyaml=None, report=None) as live:
            for point in history:
                for key, value in point.items():
                    if key != step and isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                        live.log_metric(key, float(value))
                live.next_step()
