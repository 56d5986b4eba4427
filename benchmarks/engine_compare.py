"""The JSON both engine benchmarks write: wall time per engine and round count, per-round and fixed overhead
against the in-process engine, and whether the final weights are bit-identical."""

from __future__ import annotations

import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from emit_json import emit  # noqa: E402  (this folder, first on sys.path)
from safetensors.torch import load_file

from dsfed.config import load_params
from dsfed.stages.federated_outputs import train_method

__all__ = ["engine_report", "timed_run"]

REPO = Path(__file__).resolve().parents[1]


def engine_report(benchmark: str, engine: str, times: dict[str, dict[int, float]], weights: dict[str, dict[str, torch.Tensor]],
                  rounds: int, federation: str, command: str, out: Path | None, extra: dict[str, object] | None = None) -> dict[str, object]:
    """``times[e][r]``: wall seconds of ``r`` rounds on engine ``e`` (``inprocess`` and ``engine``), for 1 and
    ``rounds``; ``weights["<e>-<rounds>"]``: final weights; ``extra``: more keys of the benchmark's own. Prints
    the JSON, writes it to ``out`` if given."""
    per_round = {e: (t[rounds] - t[1]) / (rounds - 1) for e, t in times.items()}
    final = weights[f"{engine}-{rounds}"]
    result: dict[str, object] = {
        "benchmark": benchmark, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "torch_threads": 1,
        "federation": federation, "rounds": rounds,
        "wall_s": {e: {str(r): round(v, 2) for r, v in t.items()} for e, t in times.items()},
        "per_round_s": {e: round(v, 2) for e, v in per_round.items()},
        "overhead_per_round_s": round(per_round[engine] - per_round["inprocess"], 2),
        "fixed_overhead_s": round((times[engine][1] - per_round[engine]) - (times["inprocess"][1] - per_round["inprocess"]), 2),
        "weights_bit_identical": all(torch.equal(final[k], v) for k, v in weights[f"inprocess-{rounds}"].items()),
        "command": command,
        **(extra or {}),
    }
    emit(result, out)
    return result


def timed_run(root: Path, raw: dict[str, Any], name: str) -> tuple[float, dict[str, torch.Tensor]]:
    """Write ``raw`` as ``<root>/<name>/params.yaml`` (next to the phantom sites) and time ``federated@fedunet`` on
    the stores under ``<root>/artifacts`` (shared by every run); returns the seconds and the selected weights."""
    folder = root / name
    folder.mkdir()
    shutil.copy(REPO / "data/phantom/sites.yaml", folder / "sites.yaml")
    (folder / "params.yaml").write_text(yaml.safe_dump(raw))
    params = load_params(folder / "params.yaml")
    artifacts = root / "artifacts"
    out = artifacts / "federated" / "fedunet"
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    train_method(params, folder / "params.yaml", "fedunet", artifacts, progress=False)
    wall = time.perf_counter() - start
    return wall, load_file(str(out / "model.safetensors"))
