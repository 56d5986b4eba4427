"""Flow of the ``evaluate`` stage: every model on every client's test split, with costs."""

from __future__ import annotations

import typer
from prefect import flow

from dsfed_pipeline.flows._cli import run_flow
from dsfed_pipeline.tasks.evaluation import evaluate_models
from dsfed_pipeline.tasks.generation import publish_table


@flow(name="evaluate", log_prints=True)
def evaluate_flow(params: str = "params.yaml", artifacts: str = "artifacts") -> dict[str, object]:
    """Dice / IoU / HD95 with bootstrap intervals and the efficiency table into ``<artifacts>/eval``."""
    metrics = evaluate_models(params, artifacts)
    holdout = metrics.get("holdout")
    rows = [{"model": m["label"], "source_dice": m["source_mean"].get("dice"),
             "holdout_dice": (m.get("holdout") or {}).get("dice"), "parameters": m["efficiency"]["parameters"],
             "communication_MB": round(m["efficiency"]["communication_bytes"] / 1e6, 1),
             "gflops": m["efficiency"].get("gflops_per_image")} for m in (metrics["models"][k] for k in metrics["order"])]
    publish_table(["evaluate"], rows, f"test Dice (source mean; held out: {holdout})")
    return metrics


def main(
    params: str = typer.Option("params.yaml", help="Params file (section `evaluate`)."),
    artifacts: str = typer.Option("artifacts", help="Artifacts root; writes <root>/eval."),
) -> None:
    """Run the evaluate flow (what `dvc repro evaluate` runs)."""
    run_flow(evaluate_flow, params, artifacts)


if __name__ == "__main__":
    typer.run(main)
