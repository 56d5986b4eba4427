"""Atomic writes (build under a temporary sibling path, then rename into place) and byte-stable safetensors."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def _temp_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write into; move it to ``path`` only if the block succeeds.

    Works for files and directories. On any exception the temporary path is removed and ``path`` is
    untouched. With ``overwrite=False`` an existing ``path`` raises ``FileExistsError`` before anything
    is written.
    """
    final = Path(path)
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final}: already exists")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(final)
    try:
        yield tmp
        if final.exists():
            old = _temp_sibling(final)
            os.replace(final, old)
            os.replace(tmp, final)
            _remove(old)
        else:
            os.replace(tmp, final)
    finally:
        _remove(tmp)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


def write_json(path: str | os.PathLike[str], payload: Any) -> None:
    """Write ``payload`` as indented JSON, atomically, replacing any previous file."""
    with atomic_path(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_csv(path: str | os.PathLike[str], rows: list[dict[str, Any]]) -> None:
    """``rows`` as a CSV with a header from the first row (an empty file for none), atomically."""
    import csv

    with atomic_path(path, overwrite=True) as tmp, open(tmp, "w", newline="") as fh:
        if rows:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def safe_name(name: str) -> str:
    """``name`` as one path component: every character but letters, digits, ``_``, ``.`` and ``-`` becomes ``_``."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def canonical_safetensors(blob: bytes) -> bytes:
    """``blob`` (a safetensors file) with its ``__metadata__`` keys in sorted order, nothing else changed.

    safetensors writes the metadata from a Rust hash map, so the same weights and metadata give different
    bytes in every process (and a different hash in ``dvc.lock``). The tensors' order and offsets are already
    deterministic; the header is re-serialised compactly and padded with spaces to 8 bytes, as the format allows.
    """
    size = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + size])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + blob[8 + size :]


def write_safetensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike[str], metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` (contiguous CPU copies are made) with ``metadata`` to ``path`` as byte-stable safetensors.

    The same tensors and metadata give the same bytes in every process (:func:`canonical_safetensors`).
    Writes ``path`` directly: callers wrap it in :func:`atomic_path`.
    """
    from safetensors.torch import save

    blob = save({name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}, metadata=metadata)
    Path(path).write_bytes(canonical_safetensors(blob))
