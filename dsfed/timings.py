"""Measured times: one JSON line per record in ``<artifacts>/timings.jsonl``, never in a hashed output.

Wall times depend on the machine and its load, so the same inputs would give new bytes (and a new hash in
``dvc.lock``, rerunning everything downstream) if they were written into a stage's outputs. They live here
instead: a stage record is ``{"stage", "wall_s" (the flow call), "process_s" (interpreter start to the end:
imports, Prefect start-up and the flow), "ok", "at" (UTC ISO time)}``; a measurement record is ``{"stage",
"measured": {...} (e.g. ``seconds``, ``steps_per_s``, ``inference_ms_per_image``), "at"}``. The log is
informational, not a DVC output: the report's timing page reads the newest record of each stage.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = ["TIMINGS", "latest_measured", "latest_stage_times", "record_measured", "record_stage_time"]

TIMINGS = "timings.jsonl"


def _append(artifacts: str | Path, record: dict[str, Any]) -> None:
    """Append one record (a single ``write`` of one line, so concurrent stages do not interleave)."""
    path = Path(artifacts) / TIMINGS
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({**record, "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def record_stage_time(artifacts: str | Path, stage: str, wall_s: float, process_s: float, ok: bool) -> None:
    """Append a stage's wall time record."""
    _append(artifacts, {"stage": stage, "wall_s": round(wall_s, 2), "process_s": round(process_s, 2), "ok": ok})


def record_measured(artifacts: str | Path, stage: str, measured: dict[str, Any]) -> None:
    """Append what ``stage`` measured (times, rates: numbers that differ from run to run). Never fails the
    stage: timing is informational, so an unwritable log is skipped."""
    try:
        _append(artifacts, {"stage": stage, "measured": measured})
    except OSError:
        pass


def _records(artifacts: str | Path) -> list[dict[str, Any]]:
    path = Path(artifacts) / TIMINGS
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a torn line from a killed process
    return records


def latest_measured(artifacts: str | Path) -> dict[str, dict[str, Any]]:
    """The newest measurement per stage, with its time (``{stage: {**measured, "at"}}``)."""
    return {r["stage"]: {**r["measured"], "at": r["at"]} for r in _records(artifacts) if isinstance(r.get("measured"), dict)}


def latest_stage_times(artifacts: str | Path) -> dict[str, dict[str, Any]]:
    """The newest successful record per stage (empty when no stage has run here)."""
    return {record["stage"]: record for record in _records(artifacts) if record.get("ok")}
