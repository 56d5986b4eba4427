"""Benchmark: the demo's stages on Flower against in process, from one project's stage timings.

``scripts/repro_on_flower.py --whole`` reruns every stage of the embedded default on Flower (TLS, node
authentication, one SuperNode per client on 127.0.0.1) in a project that already ran in process. Every stage
appends its wall time to ``artifacts/timings.jsonl``, so that file holds both runs: for each stage
``.flower/whole-done.txt`` lists, this pairs the last in-process record before the Flower run started
(``.flower/before/started``, else the time that folder was made) with the first record after it, and for the
stages with rounds (``federated@*``, ``samfed@*``) gives Flower's extra seconds per round (the run's fixed
costs, greeting and setting up the nodes and the final test replies, spread over its rounds).

    python benchmarks/flower_demo.py --project CLONE --out docs/benchmarks/flower-demo-cpu.json

A whole run split over sessions (``repro_on_flower.py --whole --only ...`` for the later stages):
``--merge OLD_JSON`` keeps the earlier result's rows for the stages this run did not time, and lists when
each part started (``flower_runs_started``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from emit_json import emit  # noqa: E402  (this folder, first on sys.path)


def _rounds(raw: dict[str, Any], stage: str) -> int | None:
    """The rounds of a federated or SAM-Fed stage in params ``raw`` (None: a stage without rounds)."""
    kind, _, item = stage.partition("@")
    section = raw.get({"federated": "federated", "samfed": "samfed"}.get(kind, ""), None)
    if not section:
        return None
    own = (section.get("methods" if kind == "federated" else "variants") or {}).get(item) or {}
    if own.get("strategy") == "centralized":
        return None   # the pooled baseline: no exchange, in process on either engine
    return int(own.get("rounds") or section["rounds"])


def pair_stage_times(project: Path) -> dict[str, Any]:
    """Per stage the Flower run ran: in-process and Flower wall seconds, their ratio, extra seconds a round."""
    before_dir = project / ".flower/before"
    stamp = before_dir / "started"
    started = (datetime.fromisoformat(stamp.read_text().strip()) if stamp.is_file()
               else datetime.fromtimestamp(before_dir.stat().st_mtime, timezone.utc))
    done = (project / ".flower/whole-done.txt").read_text().split()
    raw = yaml.safe_load((project / ".flower/before/params.yaml").read_text())
    before: dict[str, float] = {}
    after: dict[str, float] = {}
    for line in (project / "artifacts/timings.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "wall_s" not in record or not record.get("ok"):
            continue
        at = datetime.fromisoformat(record["at"])
        if at < started:
            before[record["stage"]] = float(record["wall_s"])
        else:
            after.setdefault(record["stage"], float(record["wall_s"]))
    rows = []
    for stage in done:
        if stage not in before or stage not in after:
            continue
        row: dict[str, Any] = {"stage": stage, "inprocess_s": before[stage], "flower_s": after[stage],
                               "ratio": round(after[stage] / before[stage], 2) if before[stage] else None}
        rounds = _rounds(raw, stage)
        if rounds:
            row["rounds"] = rounds
            row["extra_s_per_round"] = round((after[stage] - before[stage]) / rounds, 1)
        rows.append(row)
    return {"benchmark": "flower_demo", "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "flower_run_started": started.isoformat(timespec="seconds"), "stages_listed_done": len(done), **_totals(rows)}


def _totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The rows with their count and the in-process and Flower totals and ratio."""
    total_in, total_fl = sum(r["inprocess_s"] for r in rows), sum(r["flower_s"] for r in rows)
    return {"stages_compared": len(rows), "inprocess_s_total": round(total_in, 1), "flower_s_total": round(total_fl, 1),
            "ratio_total": round(total_fl / total_in, 2) if total_in else None, "stages": rows}


def merge(new: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    """``new`` with ``old``'s rows for the stages it lacks (old rows first, in their order), totals recomputed."""
    timed = {row["stage"] for row in new["stages"]}
    rows = [row for row in old["stages"] if row["stage"] not in timed] + new["stages"]
    starts = old.get("flower_runs_started") or [old["flower_run_started"]]
    return {**new, "flower_run_started": starts[0], "flower_runs_started": [*starts, new["flower_run_started"]], **_totals(rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--project", type=Path, default=Path.cwd(), help="a project where repro_on_flower.py --whole ran")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--note", help="what else ran meanwhile, and anything the figures need said")
    parser.add_argument("--merge", type=Path, metavar="OLD_JSON", help="an earlier part's result: its rows for stages this run did not time")
    args = parser.parse_args()
    result = {**pair_stage_times(args.project), "command": "python benchmarks/flower_demo.py --project CLONE"}
    if args.merge:
        result = merge(result, json.loads(args.merge.read_text()))
        result["command"] += " --merge OLD_JSON"
    if args.note:
        result["note"] = args.note
    emit(result, args.out)


if __name__ == "__main__":
    main()
