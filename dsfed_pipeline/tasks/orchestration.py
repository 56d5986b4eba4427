"""Tasks of the ``redistill`` flow: check the client an event names, summarise what the run changed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import task

from dsfed.config import load_params
from dsfed.errors import DsfedError


@task(name="check-client")
def check_client(root: str, client: str | None) -> list[str]:
    """The clients in ``params.yaml``; fails at once when the event names one that is not there."""
    params = load_params(Path(root) / "params.yaml")
    if client and client not in params.clients:
        raise DsfedError(f"clients.{client}: not in {Path(root) / 'params.yaml'} (removed after it joined?)")
    return list(params.clients)


@task(name="summarise-redistill")
def summarise(root: str, client: str | None, stages: list[dict[str, Any]]) -> str:
    """Markdown: the stages that ran (with seconds), whether distill warm-started, and each model's Dice
    on the new client next to its source mean and held-out Dice (from ``artifacts/eval/metrics.json``)."""
    ran = [s for s in stages if s["ran"]]
    lines = [f"## redistill{f' after {client} joined' if client else ''}", "",
             f"{len(ran)} stage(s) ran: " + (", ".join(f"`{s['stage']}` {s['seconds']:.0f} s" for s in ran) or "none (up to date)")]
    distill = Path(root) / "artifacts/distill/metrics.json"
    if any(s["stage"] == "distill" for s in ran) and distill.is_file():
        warm = json.loads(distill.read_text()).get("warm_start_from")
        lines.append(f"\ndistill warm start: {f'from {warm}' if warm else 'no (from the federated student and the new server SAM)'}")
    metrics_path = Path(root) / "artifacts/eval/metrics.json"
    if metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text())
        holdout = metrics.get("holdout")
        header = ["model", *([f"{client} Dice"] if client else []), "source mean Dice", f"{holdout} (held out) Dice"]
        lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for key in metrics["order"]:
            model = metrics["models"][key]
            cells = [model["label"]]
            if client:
                cells.append(_fmt(model["clients"].get(client, {}).get("dice")))
            cells += [_fmt(model["source_mean"].get("dice")), _fmt((model.get("holdout") or {}).get("dice"))]
            lines.append("| " + " | ".join(cells) + " |")
    report = Path(root) / "artifacts/report/index.html"
    if report.is_file():
        lines.append(f"\nreport: `{report.resolve()}`")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
