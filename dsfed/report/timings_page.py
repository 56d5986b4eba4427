"""The timing page: ``<artifacts>/timings.html``, what this machine measured, beside (not inside) the report.

Wall times, rates and latencies change from run to run and machine to machine, so the versioned report
(``artifacts/report``, a DVC output) carries only numbers that are the same on every machine (parameters,
communication, GFLOPs per image) and links here. This page is rewritten with the report from
``<artifacts>/timings.jsonl`` (:mod:`dsfed.timings`) and is not a DVC output.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from dsfed.io import atomic_path
from dsfed.report.tables import fmt, table_html, table_md
from dsfed.timings import latest_measured, latest_stage_times

__all__ = ["TIMINGS_PAGE", "latency_rows", "measured_rows", "stage_rows", "write_timings_page"]

TIMINGS_PAGE = "timings.html"


def stage_rows(times: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """(header, rows): each stage's newest successful flow and process wall time."""
    header = ["stage", "flow (s)", "process (s)", "finished (UTC)"]
    return header, [[k, fmt(v["wall_s"], 1), fmt(v["process_s"], 1), v["at"]] for k, v in sorted(times.items())]


def latency_rows(measured: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """(header, rows): the median batch-1 inference time of every model each evaluate stage scored."""
    header = ["stage", "model", "inference (ms/image, batch 1)", "device", "measured (UTC)"]
    rows = []
    for stage, m in sorted(measured.items()):
        for model, ms in (m.get("inference_ms_per_image") or {}).items():
            rows.append([stage, model, fmt(float(ms), 1), str(m.get("device", "")), m["at"]])
    return header, rows


def measured_rows(measured: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """(header, rows): every other measurement (seconds, steps/s, images/s, ...) of each stage."""
    header = ["stage", "measured", "measured (UTC)"]
    rows = []
    for stage, m in sorted(measured.items()):
        values = {k: v for k, v in m.items() if k not in ("at", "inference_ms_per_image")}
        if values:
            rows.append([stage, ", ".join(f"{k} {fmt(v, 2) if isinstance(v, float) else v}" for k, v in values.items()), m["at"]])
    return header, rows


def write_timings_page(artifacts: str | Path, css: str = "") -> Path:
    """Write ``<artifacts>/timings.html`` (and ``timings.md``) from the timings log; returns the HTML path."""
    artifacts = Path(artifacts)
    times, measured = latest_stage_times(artifacts), latest_measured(artifacts)
    tables = [("Stage wall times (the newest successful run of each)", stage_rows(times)),
              ("Inference latency", latency_rows(measured)),
              ("Other measurements", measured_rows(measured))]
    intro = ("Measured on the machine that ran the stages, under whatever load it had: these numbers change from run to "
             "run, so they are kept out of the versioned outputs (and the report) and read from timings.jsonl.")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>dsfed timings</title><style>{css}</style></head><body>",
             "<h1>dsfed: times on this machine</h1>", f"<p class='small'>{html.escape(intro)}</p>"]
    md = ["# dsfed: times on this machine", "", intro, ""]
    for title, (header, rows) in tables:
        if rows:
            parts += [f"<h2>{html.escape(title)}</h2>", table_html(header, rows)]
            md += [f"## {title}", "", table_md(header, rows), ""]
    if not (times or measured):
        parts.append("<p>No stage has recorded a time here yet.</p>")
    parts.append("</body></html>")
    page = artifacts / TIMINGS_PAGE
    with atomic_path(page, overwrite=True) as tmp:
        tmp.write_text("\n".join(parts))
    with atomic_path(page.with_suffix(".md"), overwrite=True) as tmp:
        tmp.write_text("\n".join(md))
    return page
