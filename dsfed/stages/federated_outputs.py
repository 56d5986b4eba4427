"""What a finished ``federated@<method>`` run writes: weights, model card, metrics JSON, dvclive curves."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from dvclive import Live

from dsfed.config import Params
from dsfed.federated.ledger import ledger_totals, read_ledger
from dsfed.io import atomic_path, write_json, write_safetensors
from dsfed.stages.federated_run import MethodRun

__all__ = ["ENGINE_RUNS", "method_metrics", "run_server_stage_on_engine", "train_method", "write_method_outputs"]

HEADLINE = ("dice", "iou")
ENGINE_RUNS = ".engine-runs"
"""Under the artifacts root: the engine's run folders of the server stages (status, simulated nodes' state)."""


def _finite(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else round(float(value), 5)


def left_out_rounds(ledger: Path) -> dict[str, list[int]]:
    """client -> the rounds it was sent the global weights but sent no update back (it failed and was left out)."""
    sent: dict[str, set[int]] = {}
    back: dict[str, set[int]] = {}
    for row in read_ledger(ledger):
        if row["what"] == "global_weights":
            sent.setdefault(row["client"], set()).add(row["round"])
        elif row["what"] in ("update", "masked_update"):   # plain, or SecAgg+'s
            back.setdefault(row["client"], set()).add(row["round"])
    return {c: sorted(rounds - back.get(c, set())) for c, rounds in sorted(sent.items()) if rounds - back.get(c, set())}


def method_metrics(run: MethodRun, ledger: Path | None) -> dict[str, Any]:
    """The metrics JSON (a DVC metric): test Dice/IoU per client, source mean, held-out client, communication."""
    source = [c for c in run.test if c != run.holdout]
    mean = {k: sum(run.test[c][k] for c in source) / len(source) for k in run.test[source[0]]} if source else {}
    comm: dict[str, Any] = {"bytes_total": 0, "rounds": len(run.curve) - 1}
    if ledger is not None and ledger.exists():
        totals = ledger_totals(ledger)
        comm["bytes_total"] = int(totals["total"])
        # per client and round it took part in (with fraction < 1 a client sits some rounds out)
        comm["bytes_per_round_per_client"] = int(totals["total"] / max(totals["exchanges"], 1))
        comm["evaluation_bytes"] = int(totals["evaluation"]["total"])
        left_out = left_out_rounds(ledger)
        if left_out:   # only then: a run where every client finished every round keeps its metrics' bytes
            comm["left_out"] = left_out
    return {
        "method": run.method,
        "model": run.spec.model,
        "strategy": run.spec.strategy,
        "parameters": run.parameters,
        "selected_round": run.selected_round,
        "val_dice": {"untrained": _finite(run.curve[0]["val_dice"]), "selected": _finite(run.curve[run.selected_round]["val_dice"])},
        "test": {client: {k: _finite(v) for k, v in metrics.items()} for client, metrics in run.test.items()},
        "test_source_mean": {k: _finite(v) for k, v in mean.items()},
        "holdout": run.holdout,
        "communication": comm,
        "resumed_from": run.resumed_from,  # the round a crashed run resumed after (null: it ran in one go)
        **run.extra,   # privacy: the (epsilon, delta) budget of a method with dp
    }


def write_method_outputs(run: MethodRun, out: Path) -> dict[str, Any]:
    """Write ``model.safetensors`` (selected weights), ``model.json``, ``metrics.json`` and ``dvclive/``; atomically."""
    out.mkdir(parents=True, exist_ok=True)
    card = {
        "model": run.spec.model,
        "options": run.spec.model_dump(mode="json"),
        "selected_round": run.selected_round,
        "parameters": run.parameters,
    }
    with atomic_path(out / "model.safetensors", overwrite=True) as tmp:
        write_safetensors(dict(run.selected), str(tmp), metadata={"model": run.spec.model, "round": str(run.selected_round)})
    write_json(out / "model.json", card)
    metrics = method_metrics(run, out / "ledger.csv" if run.spec.strategy != "centralized" else None)
    write_json(out / "metrics.json", metrics)
    with atomic_path(out / "dvclive", overwrite=True) as tmp:
        with Live(dir=str(tmp), save_dvc_exp=False, dvcyaml=None, report=None) as live:
            for point in run.curve:
                for name, value in point.items():
                    if name != "round" and _finite(value) is not None:
                        live.log_metric(name if name != "loss" else "train_loss", float(value))
                live.next_step()
    return metrics


def _state_at_the_nodes(folder: Path) -> None:
    """On Flower each client's state stays on its own node: the stage's ``client-state/`` output says so."""
    if folder.is_dir() and any(folder.iterdir()):
        return   # a run that began in process keeps what it wrote
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "README.txt").write_text("federated.engine: flower: each client's state is kept by its own node (its --state folder)\n")


def run_on_engine(params: Params, params_path: Path, task: dict[str, Any], artifacts: Path, out: Path, stores: dict[str, Path]) -> None:
    """Run a stage's ``task`` (``{"task": "federated" | "samfed", ...}``) on ``federated.engine`` (flower or
    simulation): its ServerApp writes the stage's outputs under ``out``. ``stores``: the clients' stores, for
    the simulated nodes (a real node names its own)."""
    settings = params.federated.flower
    task = {**task, "params": str(params_path.resolve()), "artifacts": str(artifacts.resolve()), "out": str(out.resolve())}
    if params.federated.engine == "simulation":
        from dsfed.federated.flower.simulation import run_on_simulation

        run_on_simulation(settings, {**task, "device": params.federated.device}, out, stores)
        return
    from dsfed.federated.flower.launch import run_on_flower

    home = Path(settings.home) if Path(settings.home).is_absolute() else params_path.resolve().parent / settings.home
    run_on_flower(settings, home, task, out)
    _state_at_the_nodes(out / "client-state")


def run_server_stage_on_engine(params: Params, params_path: str | Path | None, task: str, artifacts: Path) -> None:
    """Run DSFedMed's server stage ``task`` (``server_sam`` or ``distill``) as a ServerApp task on
    ``federated.engine``: it trains in the ServerApp, every client of the task (``params.clients``) is reached
    through its node. The run's status (and, on the simulation engine, the simulated nodes' state) goes to
    ``artifacts/.engine-runs/<task>/``, outside the stage's outputs."""
    from dsfed.errors import DsfedError
    from dsfed.stages.prepare import store_path

    if params_path is None:
        raise DsfedError(f"{task}: federated.engine {params.federated.engine} needs the params file's path")
    run_on_engine(params, Path(params_path), {"task": task}, artifacts, artifacts / ENGINE_RUNS / task,
                  {name: store_path(artifacts, name) for name in params.clients})


def train_method(params: Params, params_path: Path, method: str, artifacts: Path, progress: bool = True) -> dict[str, Any]:
    """Run ``federated@<method>`` on the configured engine and write its outputs; returns its metrics.

    ``federated.engine: flower`` submits the run to the SuperLink (:mod:`dsfed.federated.flower.launch`),
    whose ServerApp runs the same rounds loop against the hospitals' nodes and writes the same outputs;
    ``simulation`` does the same on Flower's simulation engine (:mod:`dsfed.federated.flower.simulation`). The
    ``centralized`` baseline pools every client's data in one place, so it runs in this process whatever
    the engine (it needs the stores under ``artifacts/clients/``).
    """
    from dsfed.federated.registry import CENTRALIZED
    from dsfed.stages.federated_run import run_method

    out = artifacts / "federated" / method
    if params.federated.engine != "inprocess" and params.federated.methods[method].strategy != CENTRALIZED:
        from dsfed.stages.prepare import store_path

        run_on_engine(params, params_path, {"task": "federated", "method": method}, artifacts, out,
                      {name: store_path(artifacts, name) for name in params.federation})
        return json.loads((out / "metrics.json").read_text())
    return write_method_outputs(run_method(params, method, artifacts, out, progress=progress), out)
