"""Flows of the SAM-Fed stage set (``samfed_*`` stages in dvc.yaml): one command each, ``python -m
dsfed_pipeline.flows.samfed <stage> [KEY]``."""

from __future__ import annotations

from typing import Any

import typer
from prefect import flow

from dsfed_pipeline.flows._cli import run_flow
from dsfed_pipeline.tasks import samfed as tasks

app = typer.Typer(add_completion=False, help="The SAM-Fed stages (what `dvc repro samfed...` runs).")
PARAMS = typer.Option("params.yaml", help="Params file.")
ARTIFACTS = typer.Option("artifacts", help="Artifacts root (SAM-Fed's under <root>/samfed/).")


@flow(name="samfed_prepare", log_prints=True)
def samfed_prepare(client: str, params: str = "params.yaml", artifacts: str = "artifacts", overwrite: bool = False) -> str:
    """A SAM-Fed client's store, built at the client (its images never leave it)."""
    return tasks.prepare_client(client, params, artifacts, overwrite)


@flow(name="samfed_public", log_prints=True)
def samfed_public(name: str, params: str = "params.yaml", artifacts: str = "artifacts", overwrite: bool = False) -> str:
    """The server's labelled public set."""
    return tasks.prepare_public(params, artifacts, overwrite)


@flow(name="samfed_teacher", log_prints=True)
def samfed_teacher(name: str, params: str = "params.yaml", artifacts: str = "artifacts") -> dict[str, Any]:
    """The LoRA-SAM teacher, fine-tuned on the public set at the server."""
    return tasks.train_teacher(params, artifacts)


@flow(name="samfed_init", log_prints=True)
def samfed_init(architecture: str, params: str = "params.yaml", artifacts: str = "artifacts") -> dict[str, Any]:
    """The supervised global model of one architecture on the public set."""
    return tasks.train_init(architecture, params, artifacts)


@flow(name="samfed", log_prints=True)
def samfed(variant: str, params: str = "params.yaml", artifacts: str = "artifacts") -> dict[str, Any]:
    """One SAM-Fed variant's federated rounds over the unlabelled clients."""
    metrics = tasks.train_variant(variant, params, artifacts)
    tasks.publish_variant(metrics)
    return metrics


@flow(name="samfed_evaluate", log_prints=True)
def samfed_evaluate(name: str, params: str = "params.yaml", artifacts: str = "artifacts") -> dict[str, Any]:
    """Every SAM-Fed model on every SAM-Fed client's test split."""
    return tasks.evaluate_all(params, artifacts)


@app.command("prepare")
def prepare_cmd(client: str = typer.Argument(..., help="Client name from `samfed.clients`."), params: str = PARAMS,
                artifacts: str = ARTIFACTS, overwrite: bool = typer.Option(False, help="Replace a store built from other inputs.")) -> None:
    """Build CLIENT's store (`dvc repro samfed_prepare@CLIENT`)."""
    run_flow(samfed_prepare, client, params, artifacts, overwrite)


@app.command("public")
def public_cmd(name: str = typer.Argument(..., help="The public set's name in `samfed.public`."), params: str = PARAMS,
               artifacts: str = ARTIFACTS, overwrite: bool = typer.Option(False, help="Replace a store built from other inputs.")) -> None:
    """Build the public store (`dvc repro samfed_public@NAME`)."""
    run_flow(samfed_public, name, params, artifacts, overwrite)


@app.command("teacher")
def teacher_cmd(name: str = typer.Argument(..., help="The public set's name in `samfed.public`."), params: str = PARAMS,
                artifacts: str = ARTIFACTS) -> None:
    """Fine-tune the LoRA-SAM teacher (`dvc repro samfed_teacher@NAME`)."""
    run_flow(samfed_teacher, name, params, artifacts)


@app.command("init")
def init_cmd(architecture: str = typer.Argument(..., help="A key of `samfed.architectures`."), params: str = PARAMS,
             artifacts: str = ARTIFACTS) -> None:
    """Train ARCHITECTURE's supervised global model on the public set (`dvc repro samfed_init@ARCHITECTURE`)."""
    run_flow(samfed_init, architecture, params, artifacts)


@app.command("variant")
def variant_cmd(variant: str = typer.Argument(..., help="A key of `samfed.variants`."), params: str = PARAMS,
                artifacts: str = ARTIFACTS) -> None:
    """Run VARIANT's federated rounds (`dvc repro samfed@VARIANT`); resumes after a crash."""
    run_flow(samfed, variant, params, artifacts)


@app.command("evaluate")
def evaluate_cmd(name: str = typer.Argument(..., help="The public set's name in `samfed.public`."), params: str = PARAMS,
                 artifacts: str = ARTIFACTS) -> None:
    """Evaluate every SAM-Fed model on every client's test split (`dvc repro samfed_evaluate@NAME`)."""
    run_flow(samfed_evaluate, name, params, artifacts)


@app.command("summary")
def summary_cmd(params: str = PARAMS, artifacts: str = ARTIFACTS) -> None:
    """Print the report's SAM-Fed section as Markdown (after `samfed_evaluate`); the full report has it too."""
    from dsfed.config import load_params
    from dsfed.stages.report_samfed import samfed_section

    _, lines = samfed_section(load_params(params), artifacts)
    if not lines:
        typer.echo("error: no SAM-Fed evaluation yet: run `dsfed repro --glob 'samfed_evaluate@*'` first", err=True)
        raise typer.Exit(2)
    typer.echo("\n".join(lines))


if __name__ == "__main__":
    app()
