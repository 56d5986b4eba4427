"""Tasks of the ``evaluate`` and ``report`` stages (paths and summaries in and out, never tensors)."""

from __future__ import annotations

from typing import Any

from prefect import task

from dsfed.config import load_params


@task(name="evaluate-models")
def evaluate_models(params_path: str, artifacts: str) -> dict[str, Any]:
    """Every available model on every client's test split; efficiency figures."""
    from dsfed.stages.evaluate import run_evaluate_stage

    return run_evaluate_stage(load_params(params_path), artifacts)


@task(name="build-report")
def build(params_path: str, artifacts: str) -> dict[str, Any]:
    """The self-contained HTML report and its Markdown summary."""
    from dsfed.stages.report import build_report

    return build_report(load_params(params_path), artifacts, params_path=params_path)
