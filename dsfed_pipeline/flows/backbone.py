"""Flow of the ``backbone`` stage: resolve the frozen diffusion backbone and the generic mask ControlNet."""

from __future__ import annotations

import typer
from prefect import flow

from dsfed_pipeline.flows._cli import run_flow
from dsfed_pipeline.tasks.generation import publish_table, resolve_backbone


@flow(name="backbone", log_prints=True)
def backbone(params: str = "params.yaml", artifacts: str = "artifacts") -> dict[str, object]:
    """Load the configured backbone (embedded released weights, retrained, or a local SD 1.5) once, check the
    generic ControlNet fits it, and write ``<artifacts>/backbone/manifest.json``."""
    manifest = resolve_backbone(params, artifacts)
    rows = [{"kind": manifest["kind"], "weights": manifest["weights"], "controlnet": manifest["controlnet"],
             "unet_parameters": manifest["parameters"]["unet"], "controlnet_parameters": manifest["parameters"]["controlnet"],
             "sample_size": manifest["sample_size"], "condition_size": manifest["condition_size"]}]
    publish_table(["backbone"], rows, "The frozen diffusion backbone every client's ControlNet attaches to")
    return manifest


def main(
    params: str = typer.Option("params.yaml", help="Params file (section `backbone`)."),
    artifacts: str = typer.Option("artifacts", help="Artifacts root; the manifest goes to <root>/backbone/manifest.json."),
) -> None:
    """Run the backbone flow (what `dvc repro backbone` runs)."""
    run_flow(backbone, params, artifacts)


if __name__ == "__main__":
    typer.run(main)
