"""``scripts/compare_outputs.py``: outputs whose hash changed, compared by content (the old version from the DVC
cache or a snapshot); wall-clock figures and safetensors metadata are not differences, anything else is."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import torch
from safetensors.torch import save

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("compare_outputs", REPO / "scripts/compare_outputs.py")
assert spec is not None and spec.loader is not None
compare = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare)


def _cached(project: Path, data: bytes) -> str:
    md5 = hashlib.md5(data).hexdigest()
    blob = project / ".dvc/cache/files/md5" / md5[:2] / md5[2:]
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    return md5


def _lock(outs: dict[str, str]) -> dict:
    return {"stages": {"s": {"outs": [{"path": p, "md5": m} for p, m in outs.items()]}}}


def test_timings_and_metadata_are_not_differences_but_a_weight_is(tmp_path: Path) -> None:
    w = {"w": torch.arange(4.0)}
    old = {
        "a/metrics.json": json.dumps({"dice": 0.8, "seconds": 1.5, "nested": {"wall_s": 3}}).encode(),
        "a/model.safetensors": save(w, metadata={"command": "x"}),
        "b/model.safetensors": save(w),
        "c/attrs.json": json.dumps({"synthesis": str({"n": 4, "seconds": 2.0})}).encode(),
    }
    new = {
        "a/metrics.json": json.dumps({"dice": 0.8, "seconds": 9.1, "nested": {"wall_s": 7}}).encode(),
        "a/model.safetensors": save(w, metadata={"command": "y"}),
        "b/model.safetensors": save({"w": torch.arange(4.0) + 1}),
        "c/attrs.json": json.dumps({"synthesis": str({"n": 5, "seconds": 2.0})}).encode(),
    }
    before = _lock({p: _cached(tmp_path, d) for p, d in old.items()})
    for path, data in new.items():   # the new versions in the workspace only
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(data)
    after = _lock({p: hashlib.md5(d).hexdigest() for p, d in new.items()})
    report = {p: v for p, (v, _) in compare.compare_locks(tmp_path, before, after).items()}
    assert report == {"a/metrics.json": compare.TIMING, "a/model.safetensors": compare.METADATA,
                      "b/model.safetensors": compare.DIFFERS, "c/attrs.json": compare.DIFFERS}


def test_an_uncached_output_is_compared_with_its_snapshot(tmp_path: Path) -> None:
    project, snap = tmp_path / "p", tmp_path / "snap"
    (project / "out").mkdir(parents=True)
    (project / "out/ledger.csv").write_text("round,bytes\n1,10\n")
    before = _lock({"out/ledger.csv": "0" * 32})   # cache: false: the lock has a hash, the cache no file
    assert compare.snapshot_uncached(project, before, snap) == ["out/ledger.csv"]
    (project / "out/ledger.csv").write_text("round,bytes\n1,11\n")
    after = _lock({"out/ledger.csv": "1" * 32})
    assert compare.compare_locks(project, before, after, snapshot=snap)["out/ledger.csv"][0] == compare.DIFFERS
    (project / "out/ledger.csv").write_text("round,bytes\n1,10\n")
    assert compare.compare_locks(project, before, after, snapshot=snap)["out/ledger.csv"][0] == compare.EQUAL
