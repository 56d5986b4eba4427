"""Per-stage wall times: every stage's process appends one JSON line to ``<artifacts>/timings.jsonl``.

A record is ``{"stage", "wall_s" (the flow call), "process_s" (interpreter start to the end: imports,
Prefect start-up and the flow), "ok", "at" (UTC ISO time)}``. The log is informational, not a DVC output:
the report reads the newest record of each stage for its efficiency table.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = ["TIMINGS", "latest_stage_times", "record_stage_time"]

TIMINGS = "timings.jsonl"


def record_stage_time(artifacts: str | Path, stage: str, wall_s: float, process_s: float, ok: bool) -> None:
    """Append one record (a single ``write`` of one line, so concurrent stages do not interleave)."""
    path = Path(artifacts) / TIMINGS
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"stage": stage, "wall_s": round(wall_s, 2), "process_s": round(process_s, 2), "ok": ok,
                       "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def latest_stage_times(artifacts: str | Path) -> dict[str, dict[str, Any]]:
    """The newest successful record per stage (empty when no stage has run here)."""
    path = Path(artifacts) / TIMINGS
    out: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return out
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn line from a killed process
        if record.get("ok"):
            out[record["stage"]] = record
    return out
