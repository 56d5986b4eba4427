"""Flow of the ``controlnet@<client>`` stage (runs at the client): its mask ControlNet, fine-tuned on its pairs."""

from __future__ import annotations

import typer
from prefect import flow

from dsfed_pipeline.flows._cli import run_flow
from dsfed_pipeline.tasks.generation import publish_table, train_generator


@flow(name="controlnet", log_prints=True)
def controlnet(client: str, params: str = "params.yaml", artifacts: str = "artifacts") -> dict[str, object]:
    """Fine-tune the generic ControlNet on the client's training pairs (backbone frozen); only the ControlNet
    weights and the masks are uploaded, each recorded in ``<artifacts>/generators/<client>/ledger.csv``."""
    summary = train_generator(client, params, artifacts)
    if not summary.get("held_out"):
        rows = [{"client": client, "split": split, "pairs": summary["n_train"], "steps": summary["steps"],
                 "steps_per_s": summary.get("steps_per_s"), "loss_generic": round(loss["generic"], 5),
                 "loss_fine_tuned": round(loss["fine_tuned"], 5), "upload_controlnet_bytes": summary["uploads"]["controlnet"],
                 "upload_masks_bytes": summary["uploads"]["masks"]} for split, loss in summary["fixed_noise_loss"].items()]
        publish_table(["controlnet", client], rows, f"{client}: ControlNet fine-tuning (loss at fixed noise, generic vs fine-tuned)")
    return summary


def main(
    client: str = typer.Argument(..., help="Client name from params.yaml `clients:`."),
    params: str = typer.Option("params.yaml", help="Params file (section `controlnet`)."),
    artifacts: str = typer.Option("artifacts", help="Artifacts root; uploads go to <root>/generators/<client>/."),
) -> None:
    """Run the controlnet flow for CLIENT (what `dvc repro controlnet@CLIENT` runs)."""
    run_flow(controlnet, client, params, artifacts)


if __name__ == "__main__":
    typer.run(main)
