"""Flow of the ``quality@<client>`` stage (runs at the client): controllability, realism, memorisation."""

from __future__ import annotations

import typer
from prefect import flow

from dsfed_pipeline.flows._cli import run_flow
from dsfed_pipeline.tasks.generation import audit, publish_table


@flow(name="quality", log_prints=True)
def quality(client: str, params: str = "params.yaml", artifacts: str = "artifacts") -> dict[str, object]:
    """Compare the client's synthetic set with its real data (which stays at the client); write
    ``quality.json`` and ``grid.png`` into ``<artifacts>/quality/<client>``."""
    report = audit(client, params, artifacts)
    if not report.get("held_out"):
        c, r, m = report["controllability"], report["realism_frechet"], report["memorisation"]["pixels"]
        rows = [{"client": client, "dice_synthetic": c["synthetic"].get("dice"), "dice_real_test": c["real_test"].get("dice"),
                 "frechet_synthetic": r["synthetic"], "frechet_real_heldout": r["real_heldout"],
                 "memorisation_ratio": round(m["ratio"], 3), "memorisation": m["label"]}]
        publish_table(["quality", client], rows, f"{client}: synthetic set quality (Frechet on EfficientNet-Lite0 features)")
    return report


def main(
    client: str = typer.Argument(..., help="Client name from params.yaml `clients:`."),
    params: str = typer.Option("params.yaml", help="Params file (section `quality`)."),
    artifacts: str = typer.Option("artifacts", help="Artifacts root; reads <root>/clients/<client> and <root>/synthetic/<client>."),
) -> None:
    """Run the quality flow for CLIENT (what `dvc repro quality@CLIENT` runs)."""
    run_flow(quality, client, params, artifacts)


if __name__ == "__main__":
    typer.run(main)
