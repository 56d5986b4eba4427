"""Flow of the ``report`` stage: the self-contained HTML report and a Markdown summary."""

from __future__ import annotations

from pathlib import Path

import typer
from prefect import flow
from prefect.artifacts import create_markdown_artifact

from dsfed_pipeline.flows._cli import run_flow
from dsfed_pipeline.tasks.evaluation import build


@flow(name="report", log_prints=True)
def report_flow(params: str = "params.yaml", artifacts: str = "artifacts") -> dict[str, object]:
    """Write ``<artifacts>/report/index.html`` and ``summary.md``; publish the summary as a Markdown artifact."""
    result = build(params, artifacts)
    create_markdown_artifact(key="dsfed-report", markdown=result["summary"],
                             description=f"report: {Path(result['html']).resolve()}")
    print(f"report: {result['html']}")
    return result


def main(
    params: str = typer.Option("params.yaml", help="Params file."),
    artifacts: str = typer.Option("artifacts", help="Artifacts root; reads eval, federated, server_sam, distill, quality; writes <root>/report."),
) -> None:
    """Run the report flow (what `dvc repro report` runs)."""
    run_flow(report_flow, params, artifacts)


if __name__ == "__main__":
    typer.run(main)
