"""What ``dsfed config validate`` says about the generation side, read without torch: the generic
ControlNet's learnt tasks against ``data.classes``, and whether the embedded backbone knows ``backbone.prompt``.

The embedded ControlNet records the tasks it was pre-trained on (``tasks`` in its safetensors metadata:
task -> classes). Its condition image is class-agnostic (:func:`dsfed.generation.condition.render_condition`),
so it loads for any task; a note says when the task's class count is one it never saw. The embedded backbone
lists its learnt prompts in ``backbone.json``; any other prompt gets its generic prompt row.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from dsfed.heads import safetensors_header

if TYPE_CHECKING:
    from dsfed.config import Params

__all__ = ["backbone_prompts", "controlnet_class_note", "controlnet_tasks", "generation_notes", "prompt_note", "prompt_row"]


def prompt_row(prompts: tuple[str, ...] | list[str], text: str) -> int:
    """The embedding row of ``text`` in a backbone that learnt ``prompts``: 1 + its index (case and spacing
    ignored), else 0 (the generic row)."""
    def norm(value: str) -> str:
        return " ".join(value.lower().split())

    known = [norm(p) for p in prompts]
    return 1 + known.index(norm(text)) if norm(text) in known else 0


def controlnet_tasks(path: str | Path | None) -> dict[str, list[str]] | None:
    """task -> classes the dsfed ControlNet file at ``path`` was pre-trained on (None: not recorded, or not
    a dsfed ``.safetensors``)."""
    if path is None or Path(path).suffix != ".safetensors" or not Path(path).is_file():
        return None
    _, metadata = safetensors_header(path)
    try:
        tasks = json.loads(metadata["tasks"]) if metadata.get("tasks") else None
    except json.JSONDecodeError:
        return None
    return {str(k): [str(c) for c in v] for k, v in tasks.items()} if isinstance(tasks, dict) else None


def controlnet_class_note(tasks: dict[str, list[str]] | None, classes: list[str], controlnet: object) -> str | None:
    """What happens when the task's classes differ from every task the generic ControlNet learnt (None:
    nothing to say: not recorded, a learnt task's classes, or a learnt class count under other names)."""
    if not tasks:
        return None
    counts = sorted({len(v) for v in tasks.values()})
    if list(classes) in tasks.values() or len(classes) in counts:
        return None
    learnt = ", ".join(f"{task} {names}" for task, names in tasks.items())
    return (f"backbone.controlnet: {controlnet} learnt {learnt}; {len(classes)} classes {list(classes)} draw a condition "
            f"image it never saw (it knows {' and '.join(map(str, counts))}-class masks): each client's fine-tuning "
            "adapts it (backbone.controlnet: null starts from the backbone's UNet instead)")


def backbone_prompts(folder: str | Path) -> list[str] | None:
    """The prompts an embedded backbone folder (or its parent) learnt; None when it has no ``backbone.json``."""
    folder = Path(folder)
    config = folder / "backbone" / "backbone.json" if (folder / "backbone" / "backbone.json").is_file() else folder / "backbone.json"
    if not config.is_file():
        return None
    try:
        return [str(p) for p in json.loads(config.read_text()).get("spec", {}).get("prompts", [])]
    except (json.JSONDecodeError, AttributeError):
        return None


def prompt_note(prompt: str, known: list[str] | None) -> str | None:
    """A note when ``prompt`` is not one of ``known`` (case and spacing ignored): the generic row is used."""
    if not known or prompt_row(known, prompt):
        return None
    return (f"backbone.prompt: {prompt!r} is not one the embedded backbone learnt ({'; '.join(map(repr, known))}): "
            "its generic prompt (trained on all its tasks) is used")


def _resolve(path: Path, root: Path) -> Path:
    return path if path.is_absolute() else root / path


def generation_notes(params: Params, root: str | Path = ".") -> list[str]:
    """The generation side's notes for ``params`` (relative paths taken from ``root``, the params file's folder)."""
    cfg, root = params.backbone, Path(root)
    notes: list[str | None] = []
    if cfg.kind == "embedded":
        if cfg.controlnet is not None:
            path = _resolve(cfg.controlnet, root)
            notes.append(controlnet_class_note(controlnet_tasks(path), list(params.data.classes), cfg.controlnet))
        if cfg.path is not None:
            notes.append(prompt_note(cfg.prompt, backbone_prompts(_resolve(cfg.path, root))))
    elif cfg.kind == "pretrain":
        from dsfed.data.phantom import TASK_CLASSES
        from dsfed.generation.corpus import TASK_PROMPTS

        tasks: dict[str, list[str]] = {t: list(TASK_CLASSES[t]) for t in cfg.pretrain.tasks}
        notes.append(controlnet_class_note(tasks, list(params.data.classes), "(pretrained in the stage)"))
        notes.append(prompt_note(cfg.prompt, [TASK_PROMPTS[t] for t in cfg.pretrain.tasks]))
    return [n for n in notes if n is not None]
