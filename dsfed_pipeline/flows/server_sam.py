"""Flow of the ``server_sam`` stage (runs at the server): the foundation SAM fine-tuned on synthetic data."""

from __future__ import annotations

import typer
from prefect import flow

from dsfed_pipeline.flows._cli import run_flow
from dsfed_pipeline.tasks.generation import publish_table
from dsfed_pipeline.tasks.server import finetune


@flow(name="server-sam", log_prints=True)
def server_sam_flow(params: str = "params.yaml", artifacts: str = "artifacts") -> dict[str, object]:
    """Fine-tune ``params.server_sam.model`` from its checkpoint on every source client's synthetic set
    into ``<artifacts>/server_sam`` (no client data is read)."""
    metrics = finetune(params, artifacts)
    rows = [{"epoch": h["epoch"], "train_loss": h["train_loss"], "synthetic_val_dice": h["val_dice_mean"]} for h in metrics["history"]]
    publish_table(["server-sam"], rows, f"server SAM ({metrics['model']}): epoch {metrics['selected_epoch']} selected on synthetic val")
    return metrics


def main(
    params: str = typer.Option("params.yaml", help="Params file (section `server_sam`)."),
    artifacts: str = typer.Option("artifacts", help="Artifacts root; reads <root>/synthetic, writes <root>/server_sam."),
) -> None:
    """Run the server_sam flow (what `dvc repro server_sam` runs)."""
    run_flow(server_sam_flow, params, artifacts)


if __name__ == "__main__":
    typer.run(main)
