"""Compare the outputs two dvc.lock files record, by content: what differs, and whether only in timings.

A rerun of the pipeline records new hashes for outputs that hold wall-clock figures (a stage's ``seconds``, a
sampler's ``images_per_s``, an inference time) or how a run went (``resumed_from``), though every weight and
score is the same. This reads both versions of each output whose hash changed (the old one from the DVC cache,
``.dvc/cache/files/md5``; the new one from the cache or the workspace) and compares them file by file:

- equal bytes: equal;
- JSON (and a Zarr store's ``zarr.json``): equal once :data:`TIMING_KEYS` are dropped at any depth (values that
  are a Python ``repr`` of a dict, as in Zarr attributes, are parsed first) -> ``timing only``;
- safetensors: equal tensors (names, dtypes, values) -> ``metadata only``;
- dvclive ``.tsv``: equal once the ``timestamp`` column is dropped -> ``timing only``;
- anything else, or a file only in one version: ``DIFFERS``.

    python scripts/compare_outputs.py OLD_LOCK [NEW_LOCK]     # NEW_LOCK defaults to ./dvc.lock
"""

from __future__ import annotations

import ast
import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

import yaml

TIMING_KEYS = frozenset({"seconds", "steps_per_s", "images_per_s", "wall_s", "inference_ms_per_image", "timestamp", "resumed_from",
                         "wall_seconds", "elapsed_s"})
EQUAL, TIMING, METADATA, DIFFERS = "equal", "timing only", "metadata only", "DIFFERS"


def lock_outputs(lock: dict[str, Any]) -> dict[str, str]:
    """out path -> md5 over every stage of a parsed dvc.lock."""
    return {o["path"]: o.get("md5", "") for body in lock.get("stages", {}).values() for o in body.get("outs", [])}


def _cache(project: Path, md5: str) -> Path:
    return project / ".dvc/cache/files/md5" / md5[:2] / md5[2:]


def snapshot_uncached(project: Path, lock: dict[str, Any], dest: Path, skip: tuple[str, ...] = ()) -> list[str]:
    """Copy every output of ``lock`` whose version the DVC cache lacks (``cache: false`` outputs: metrics,
    ledgers, plots) from the workspace to ``dest`` (same relative paths), so that it can be compared after a
    rerun replaced it; returns the paths copied."""
    import shutil

    copied = []
    for path, md5 in lock_outputs(lock).items():
        if path.endswith(skip) or files_of(project, path, md5, workspace=False) is not None:
            continue
        source, target = project / path, dest / path
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
        elif source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        else:
            continue
        copied.append(path)
    return copied


def files_of(project: Path, path: str, md5: str, workspace: bool | Path) -> dict[str, bytes] | None:
    """relative path -> bytes of an output version (``""`` for a file output); None when neither the cache nor
    the folder ``workspace`` (True: the project) holds it."""
    if md5.endswith(".dir"):
        listing = _cache(project, md5)
        if listing.is_file():
            out = {}
            for entry in json.loads(listing.read_text()):
                blob = _cache(project, entry["md5"])
                if not blob.is_file():
                    return None
                out[entry["relpath"]] = blob.read_bytes()
            return out
    elif md5 and _cache(project, md5).is_file():
        return {"": _cache(project, md5).read_bytes()}
    if workspace is False:
        return None
    target = (project if workspace is True else Path(workspace)) / path
    if target.is_file():
        return {"": target.read_bytes()}
    if target.is_dir():
        return {p.relative_to(target).as_posix(): p.read_bytes() for p in sorted(target.rglob("*")) if p.is_file()}
    return None


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    if isinstance(value, str) and value.startswith("{") and value.endswith("}"):
        try:
            return _strip(ast.literal_eval(value))
        except (ValueError, SyntaxError):
            return value
    return value


def _tensors(data: bytes) -> dict[str, Any] | None:
    from safetensors.torch import load

    try:
        return {k: (str(v.dtype), tuple(v.shape), v.numpy().tobytes()) for k, v in load(data).items()}
    except Exception:
        return None


def _tsv_rows(data: bytes) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if k != "timestamp"} for row in csv.DictReader(io.StringIO(data.decode()), delimiter="\t")]


def compare_file(name: str, old: bytes, new: bytes) -> str:
    """:data:`EQUAL`, :data:`TIMING`, :data:`METADATA` or :data:`DIFFERS` for one file's two versions."""
    if old == new:
        return EQUAL
    if name.endswith((".json", "zarr.json")) or not name:
        try:
            same = _strip(json.loads(old)) == _strip(json.loads(new))
            return TIMING if same else DIFFERS
        except (ValueError, UnicodeDecodeError):
            pass
    if name.endswith(".safetensors") or not name:
        a, b = _tensors(old), _tensors(new)
        if a is not None and b is not None:
            return METADATA if a == b else DIFFERS
    if name.endswith(".tsv"):
        return TIMING if _tsv_rows(old) == _tsv_rows(new) else DIFFERS
    return DIFFERS


def compare_locks(project: Path, old_lock: dict[str, Any], new_lock: dict[str, Any], skip: tuple[str, ...] = (),
                  snapshot: Path | None = None) -> dict[str, tuple[str, list[str]]]:
    """out path -> (verdict, the files behind it) for every output whose hash differs (``skip``: path suffixes
    left out, e.g. checkpoints; ``snapshot``: where :func:`snapshot_uncached` kept the old uncached outputs).
    The verdict is the worst of its files' (DIFFERS > timing only > metadata only)."""
    old, new = lock_outputs(old_lock), lock_outputs(new_lock)
    rank = {EQUAL: 0, METADATA: 1, TIMING: 2, DIFFERS: 3}
    report: dict[str, tuple[str, list[str]]] = {}
    for path, md5 in sorted(new.items()):
        if old.get(path) == md5 or path.endswith(skip):
            continue
        before = files_of(project, path, old.get(path, ""), workspace=snapshot if snapshot is not None else False)
        after = files_of(project, path, md5, workspace=True)
        if before is None or after is None:
            report[path] = (DIFFERS, ["(a version is missing from the DVC cache)"])
            continue
        verdicts = {name: compare_file(name or path, before.get(name, b"\0missing"), after.get(name, b"\0missing"))
                    for name in sorted(set(before) | set(after))}
        worst = max(verdicts.values(), key=rank.__getitem__)
        report[path] = (worst, [f"{name or Path(path).name}: {v}" for name, v in verdicts.items() if v != EQUAL])
    return report


def main() -> None:
    project = Path.cwd()
    old = yaml.safe_load(Path(sys.argv[1]).read_text())
    new = yaml.safe_load(Path(sys.argv[2] if len(sys.argv) > 2 else "dvc.lock").read_text())
    report = compare_locks(project, old, new)
    for path, (verdict, files) in report.items():
        print(f"{verdict:14s} {path}  ({'; '.join(files[:6])}{' ...' if len(files) > 6 else ''})")
    differs = [p for p, (v, _) in report.items() if v == DIFFERS]
    print(f"{len(report)} outputs changed hash; {len(differs)} differ in content")
    sys.exit(1 if differs else 0)


if __name__ == "__main__":
    main()
