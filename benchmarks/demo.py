"""Benchmark: ``make demo`` from a fresh clone: wall time, peak memory, the stage table, the no-op rerun.

Prints one JSON object (and writes it to ``--out``) and a table of the stages, slowest first. On a git clone of
the project's HEAD under ``--work`` (the user's checkout is never touched):

1. ``make install`` (timed apart: ``install_s``), then ``make demo`` (``demo_s``) while a sampler adds up the
   resident memory of every process under it each 0.2 s (``peak_rss_gb``: RSS counts a page shared by two
   processes twice, so this is an upper bound on what the machine needed).
2. The stage table from the clone's ``artifacts/timings.jsonl``: per stage ``process_s`` (the stage's python
   process: interpreter start, imports, Prefect and the work) and ``wall_s`` (the flow call alone); their
   difference is the start-up a stage pays before any work (``startup_s``).
3. ``dvc repro`` again (``noop_repro_s``: nothing changed, nothing should run) and ``dsfed config validate``
   (``validate_s``), each the best of three.
4. The report's figures that issue 18 holds the speed-ups to: test Dice (source mean / held-out) per model.

    python benchmarks/demo.py --work /tmp/dsfed-demo-bench --out docs/benchmarks/demo-cpu.json

``--existing DIR`` skips 1 and summarises a demo already run in DIR (no memory figure, no install time).
``--target STAGE`` runs and reruns ``dsfed repro STAGE`` instead of ``make demo`` (``--target evaluate``: DSFedMed's
stages alone, without SAM-Fed's and the report); ``--venv`` names the virtual environment an existing run used.
Run it on a quiet machine: a second CPU-bound job on 2 cores slows both 2-6x.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from emit_json import emit  # noqa: E402  (this folder, first on sys.path)

from dsfed.timings import latest_stage_times  # noqa: E402


class TreeMemory:
    """Samples the summed RSS of a process and all its descendants every ``interval`` seconds (a thread)."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.pid, self.interval, self.peak = pid, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                root = psutil.Process(self.pid)
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            total = 0
            for proc in procs:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    continue
            self.peak = max(self.peak, total)
            self._stop.wait(self.interval)


def _timed(args: list[str], cwd: Path, log: Path | None = None, memory: bool = False) -> tuple[float, int]:
    """Run ``args`` in ``cwd`` (output to ``log``); returns (seconds, peak tree RSS in bytes or 0). Exits on failure."""
    out = open(log, "w") if log else subprocess.DEVNULL
    try:
        t0 = time.perf_counter()
        proc = subprocess.Popen(args, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        peak = 0
        if memory:
            with TreeMemory(proc.pid) as sampler:
                proc.wait()
            peak = sampler.peak
        else:
            proc.wait()
        seconds = time.perf_counter() - t0
    finally:
        if log:
            out.close()  # type: ignore[union-attr]
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed in {cwd} (exit {proc.returncode})" + (f"; see {log}" if log else ""))
    return seconds, peak


def _best_of(args: list[str], cwd: Path, n: int = 3) -> float:
    return round(min(_timed(args, cwd)[0] for _ in range(n)), 3)


def stage_table(artifacts: Path) -> list[dict[str, Any]]:
    """One row per stage that ran (newest successful record), slowest process first."""
    rows = []
    for stage, record in latest_stage_times(artifacts).items():
        process, wall = float(record["process_s"]), float(record["wall_s"])
        rows.append({"stage": stage, "process_s": round(process, 1), "wall_s": round(wall, 1), "startup_s": round(process - wall, 1)})
    return sorted(rows, key=lambda r: -r["process_s"])


def report_figures(artifacts: Path) -> dict[str, dict[str, float | None]]:
    """Test Dice per model of the report (``artifacts/eval/metrics.json``): source mean and held-out."""
    path = artifacts / "eval" / "metrics.json"
    if not path.is_file():
        return {}
    models = json.loads(path.read_text())["models"]
    return {key: {"source": (m.get("source_mean") or {}).get("dice"), "holdout": (m.get("holdout") or {}).get("dice")}
            for key, m in models.items()}


def summarise(root: Path, result: dict[str, Any], target: str | None = None, venv: Path | None = None) -> dict[str, Any]:
    artifacts = root / "artifacts"
    stages = stage_table(artifacts)
    result["stages"] = stages
    result["stage_count"] = len(stages)
    result["process_s_total"] = round(sum(r["process_s"] for r in stages), 1)
    result["startup_s_total"] = round(sum(r["startup_s"] for r in stages), 1)
    result["report_dice"] = report_figures(artifacts)
    bin_dir = (venv or root / ".venv") / "bin"
    dvc, dsfed = bin_dir / "dvc", bin_dir / "dsfed"
    if dvc.exists():
        result["noop_repro_s"] = _best_of([str(dvc), "repro", *([target] if target else [])], root)
    if dsfed.exists():
        result["validate_s"] = _best_of([str(dsfed), "config", "validate"], root)
    return result


def print_table(result: dict[str, Any]) -> None:
    print(f"{'stage':<36}{'process s':>11}{'work s':>9}{'start-up s':>12}", file=sys.stderr)
    for row in result["stages"]:
        print(f"{row['stage']:<36}{row['process_s']:>11.1f}{row['wall_s']:>9.1f}{row['startup_s']:>12.1f}", file=sys.stderr)
    print(f"{'total (' + str(result['stage_count']) + ' stages)':<36}{result['process_s_total']:>11.1f}{'':>9}"
          f"{result['startup_s_total']:>12.1f}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/dsfed-demo-bench"), help="Folder for the clone (created; must not exist).")
    parser.add_argument("--existing", type=Path, default=None, help="Summarise the demo already run in this checkout instead.")
    parser.add_argument("--out", type=Path, default=None, help="Also write the JSON here.")
    parser.add_argument("--target", default=None, help="Run `dsfed repro TARGET` (and time its no-op rerun) instead of make demo.")
    parser.add_argument("--venv", type=Path, default=None, help="The virtual environment of an --existing run (default: its .venv).")
    parser.add_argument("--note", default=None, help="A sentence kept in the JSON (how an --existing run was taken: its command, load).")
    args = parser.parse_args()

    import torch

    result: dict[str, Any] = {"benchmark": "demo", "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                              "torch_threads": torch.get_num_threads(), "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if args.existing:
        root = args.existing.resolve()
        result["source"] = f"an existing run in {root}"
    else:
        if args.work.exists():
            raise SystemExit(f"--work {args.work}: exists; give a new folder (the benchmark clones into it)")
        args.work.mkdir(parents=True)
        root = args.work / "demo"
        subprocess.run(["git", "clone", "-q", str(REPO), str(root)], check=True)
        result["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
        print(f"clone of {result['commit']} in {root}; make install ...", file=sys.stderr)
        result["install_s"] = round(_timed(["make", "install"], root, args.work / "install.log")[0], 1)
        print(f"make demo (log: {args.work / 'demo.log'}) ...", file=sys.stderr)
        command = ["make", "demo"] if not args.target else [str(root / ".venv/bin/dsfed"), "repro", args.target]
        seconds, peak = _timed(command, root, args.work / "demo.log", memory=True)
        result["demo_s"], result["peak_rss_gb"] = round(seconds, 1), round(peak / 1e9, 2)
    result["target"] = args.target or "make demo"
    if args.note:
        result["note"] = args.note
    result = summarise(root, result, args.target, args.venv)
    print_table(result)
    emit(result, args.out)


if __name__ == "__main__":
    main()
