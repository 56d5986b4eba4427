"""Flow of the ``distill`` stage (runs at the server): SAM <-> student mutual distillation on synthetic data."""

from __future__ import annotations

import typer
from prefect import flow

from dsfed_pipeline.flows._cli import run_flow
from dsfed_pipeline.tasks.generation import publish_table
from dsfed_pipeline.tasks.server import distill


@flow(name="distill", log_prints=True)
def distill_flow(params: str = "params.yaml", artifacts: str = "artifacts") -> dict[str, object]:
    """Learnability-guided mutual distillation (``params.distill``) into ``<artifacts>/distill``."""
    metrics = distill(params, artifacts)
    rows = [{k: r.get(k) for k in ("round", "pool_size", "total", "gt_sam", "gt_tiny", "kl_sam_tiny", "kl_tiny_sam",
                                   "val_dice_sam", "val_dice_tiny", "real_val_dice_sam", "real_val_dice_tiny")} for r in metrics["rounds"]]
    publish_table(["distill"], rows, f"distillation ({metrics['settings']['selection']}, lam {metrics['settings']['lam']}): "
                  f"{metrics['verdict']}")
    return metrics


def main(
    params: str = typer.Option("params.yaml", help="Params file (section `distill`)."),
    artifacts: str = typer.Option("artifacts", help="Artifacts root; reads server_sam, federated/<student>, synthetic; writes <root>/distill."),
) -> None:
    """Run the distill flow (what `dvc repro distill` runs)."""
    run_flow(distill_flow, params, artifacts)


if __name__ == "__main__":
    typer.run(main)
