"""Class heads of checkpoints, read without torch: what ``dsfed config validate`` says will be re-initialised.

A foundation checkpoint records the classes its head knows (the embedded ``sam_demo``: optic_disc, optic_cup,
lesion, polyp). A task whose classes it knows gets those channels by name; for any other task everything but
the class head loads and the head is re-initialised with a warning (:func:`dsfed.models.registry.build_model`),
as the paper's code does for its head.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dsfed.config import Params

__all__ = ["CLASS_HEAD", "checkpoint_classes", "class_head_notes",
           "head_classes", "head_fits", "safetensors_header"]

CLASS_HEAD = "head.weight"
"""The class head's weight in a saved segmenter (``(C, tokens, 1, 1)`` for the SAM family): its first dim is C."""


def safetensors_header(path: str | Path) -> tuple[dict[str, list[int]], dict[str, str]]:
    """(tensor name -> shape, metadata) from a safetensors file's header (reads only the header)."""
    with open(path, "rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(length))
    shapes = {name: list(info["shape"]) for name, info in header.items() if name != "__metadata__"}
    return shapes, dict(header.get("__metadata__") or {})


def _head(path: str | Path) -> tuple[list[str] | None, int | None]:
    """(the class names its ``classes`` metadata records, the head's class count) of a dsfed segmenter file;
    None for what it lacks (an official SAM ``.pth`` or ``.safetensors`` has no head, a missing file neither)."""
    if Path(path).suffix != ".safetensors" or not Path(path).is_file():
        return None, None
    shapes, metadata = safetensors_header(path)
    shape = shapes.get(CLASS_HEAD)
    try:
        names = json.loads(metadata["classes"]) if metadata.get("classes") else None
    except json.JSONDecodeError:
        names = None
    return ([str(n) for n in names] if isinstance(names, list) else None), (shape[0] if shape else None)


def head_classes(path: str | Path) -> int | None:
    """How many classes a dsfed segmenter file's head has; None for anything else."""
    return _head(path)[1]


def checkpoint_classes(path: str | Path) -> list[str] | None:
    """The class names a segmenter file's head was trained for (its ``classes`` metadata), None if unrecorded."""
    return _head(path)[0]


def _fits(known: list[str] | None, count: int | None, classes: list[str]) -> bool:
    return all(name in known for name in classes) if known is not None else count == len(classes)


def head_fits(path: str | Path, classes: list[str]) -> bool:
    """Whether the file's trained head serves ``classes``: by name when it records them (its channels for
    those classes are picked at load), else by count. False for files without a head."""
    return _fits(*_head(path), classes)


def _checkpoints(params: Params, root: Path) -> list[tuple[str, Path]]:
    found = [(f"federated.methods.{name}.checkpoint", spec.checkpoint) for name, spec in params.federated.methods.items()]
    found.append(("server_sam.checkpoint", params.server_sam.checkpoint))
    return [(field, root / path) for field, path in found if path is not None]


def class_head_notes(params: Params, root: str | Path = ".") -> list[str]:
    """One line per checkpoint whose class head does not match ``data.classes`` (it will be re-initialised);
    relative paths are taken from ``root`` (the params file's folder)."""
    notes = []
    classes = list(params.data.classes)
    for field, path in _checkpoints(params, Path(root)):
        known, found = _head(path)
        if (known is None and found is None) or _fits(known, found, classes):  # a subset loads by name, silently (the load logs it)
            continue
        held = f"a head for {known}, not {classes}" if known is not None else \
            f"a {found}-class head and data.classes has {len(classes)}"
        notes.append(f"{field}: {path} has {held}: its class head is re-initialised at load (everything else loads)")
    return notes
