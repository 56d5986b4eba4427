"""The ``redistill`` flow: after a client joins, bring the pipeline up to date and say what changed.

``make ui`` serves it as a deployment triggered by ``dsfed.client.joined`` (``dsfed clients add`` emits
it) and on ``redistill.cron``. It drives DVC through the ``pipeline`` flow, so DVC decides what reruns:
with a pinned ``federated.clients``, only the new client's ``prepare``, ``controlnet``, ``synthesize`` and
``quality`` instances, the ``federation`` roster (unchanged, so no federated stage follows) and the
server side (``server_sam``, ``distill`` warm-started from the previous distilled models, ``evaluate``,
``report``). A scheduled run with nothing out of date does nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from dsfed.config import load_params
from dsfed.errors import DsfedError
from flows._cli import run_flow
from flows.pipeline import pipeline


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


@flow(name="redistill", log_prints=True)
def redistill(client: str | None = None, root: str = ".") -> list[dict[str, Any]]:
    """Bring the pipeline at ``root`` up to date after ``client`` joined (None: a scheduled run);
    returns the pipeline's per-stage rows and publishes a Markdown summary."""
    root = str(Path(root).resolve())
    names = check_client(root, client)
    print(f"redistill: {len(names)} clients in params.yaml{f'; {client} joined' if client else ''}")
    stages = pipeline(root=root)
    markdown = summarise(root, client, stages)
    create_markdown_artifact(key="redistill", markdown=markdown,
                             description=f"redistill{f' after {client} joined' if client else ''}")
    print(markdown)
    return stages


def main(
    client: str = typer.Argument(None, help="The client that joined (default: none, as a scheduled run)."),
    root: str = typer.Option(".", help="Project root (where dvc.yaml and params.yaml are)."),
) -> None:
    """Run the redistill flow once, by hand (what the `redistill` deployment runs on an event or schedule)."""
    run_flow(redistill, client, root)


if __name__ == "__main__":
    typer.run(main)
