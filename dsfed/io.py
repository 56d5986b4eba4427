"""Atomic writes (build under a temporary sibling path, then rename into place), byte-stable safetensors and .npz."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import torch


def _temp_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` names a live process (one we may not signal counts as alive; so does any doubt)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OverflowError, OSError):  # PermissionError: alive under another user
        return True
    return True


def _remove_stale_temporaries(final: Path) -> None:
    """Remove ``final``'s temporary siblings (``.{name}.tmp-{pid}-{8 hex}``) left by writers that are gone.

    A writer killed mid-block (SIGKILL skips ``finally``) leaves its temporary inside the output folder, where it
    changes a DVC-tracked folder's hash. Only names matching that exact pattern for ``final.name`` are touched,
    and only when their pid is not a live process.
    """
    pattern = re.compile(rf"\.{re.escape(final.name)}\.tmp-(\d+)-[0-9a-f]{{8}}")
    try:
        entries = list(os.scandir(final.parent))
    except OSError:
        return
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match and not _pid_alive(int(match.group(1))):
            _remove(Path(entry.path))


def _fsync_path(path: Path) -> None:
    """fsync one file or directory by path; platforms that refuse (``OSError``) are ignored."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    """fsync ``path`` if it is a regular file; for a directory, every regular file and directory inside it."""
    if path.is_symlink() or not path.is_dir():
        if path.is_file() and not path.is_symlink():
            _fsync_path(path)
        return
    for root, dirs, files in os.walk(path):
        for name in files:
            file = Path(root) / name
            if file.is_file() and not file.is_symlink():
                _fsync_path(file)
        _fsync_path(Path(root))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write into; move it to ``path`` only if the block succeeds.

    Works for files and directories. On any exception the temporary path is removed and ``path`` is
    untouched. With ``overwrite=False`` an existing ``path`` raises ``FileExistsError`` before anything
    is written. Stale temporaries of ``path`` left by dead writers are removed first.

    The finished temporary is fsynced (a directory: every file and directory in it), then renamed, then the
    parent directory is fsynced. A file replaces a file (or nothing) with one ``os.replace``, so ``path``
    always exists. A non-empty directory cannot be replaced atomically: when either side is a directory and
    ``path`` exists, the old one is first renamed aside, the new one renamed in, the old one removed, leaving
    a moment without ``path``.
    """
    final = Path(path)
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final}: already exists")
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(final)
    tmp = _temp_sibling(final)
    try:
        yield tmp
        _fsync_tree(tmp)
        if final.exists() and (final.is_dir() or tmp.is_dir()):
            old = _temp_sibling(final)
            os.replace(final, old)
            os.replace(tmp, final)
            _remove(old)
        else:
            os.replace(tmp, final)
        _fsync_path(final.parent)
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


def write_npz(path: str | os.PathLike[str], arrays: dict[str, np.ndarray], compressed: bool = True) -> None:
    """Write ``arrays`` to ``path`` as a byte-stable ``.npz`` (``np.load`` reads it back), atomically.

    ``np.savez`` stamps each zip member with the current local time, so the same arrays give different bytes
    (and a different hash in ``dvc.lock``). Here members ``<key>.npy`` follow ``arrays``' order, each dated
    1980-01-01 with fixed permissions, deflated (stored with ``compressed=False``); no pickles.
    """
    import numpy as np
    from numpy.lib import format as npy_format

    compression = zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED
    with atomic_path(path, overwrite=True) as tmp, zipfile.ZipFile(tmp, "w", compression=compression) as archive:
        for key, array in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = compression
            info.create_system = 3  # the Unix value on every platform, so the bytes match across them
            info.external_attr = 0o644 << 16
            buffer = io.BytesIO()
            npy_format.write_array(buffer, np.asanyarray(array), allow_pickle=False)
            archive.writestr(info, buffer.getvalue())
