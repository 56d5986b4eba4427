"""The SAM-Fed stage set's I/O: ``samfed_prepare@<client>``, ``samfed_public``, ``samfed_teacher``,
``samfed_init@<architecture>``, ``samfed@<variant>`` and ``samfed_evaluate``, all under ``artifacts/samfed/``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsfed.errors import DsfedError
from dsfed.samfed.settings import PUBLIC
from dsfed.samfed.task import init_folder, public_store, samfed_root, samfed_view, teacher_folder, variant_folder
from dsfed.stages.producers import ModelEntry

if TYPE_CHECKING:
    from dsfed.config import Params

__all__ = ["VARIANT_LABELS", "produced_models", "run_samfed_evaluate", "run_samfed_init", "run_samfed_prepare", "run_samfed_public",
           "run_samfed_teacher", "run_samfed_variant"]

VARIANT_LABELS = {
    "samfed": "SAM-Fed", "selftrain": "FedAvg + self-training", "sam_pseudo": "FedAvg + SAM pseudo-labels",
    "supervised": "Supervised FedAvg (clients' labels: upper bound)", "no_agreement": "SAM-Fed without agreement (SAM only)",
    "no_kd": "SAM-Fed without global KD", "fixed_tau": "SAM-Fed with a fixed threshold",
    "samfed_hetero": "SAM-Fed, heterogeneous", "hssf": "RC + RF without SAM (HSSF-style)",
    "samfed_nn": "SAM-Fed (nnU-Net)", "selftrain_nn": "FedAvg + self-training (nnU-Net)",
    "supervised_nn": "Supervised FedAvg (nnU-Net, clients' labels: upper bound)",
}
"""Display names of the embedded default's variants; any other shows under its own name."""


def _enabled(params: Params) -> None:
    if not params.samfed.enabled:
        raise DsfedError("samfed: no SAM-Fed task in params (samfed.public and samfed.variants are empty)")


def run_samfed_prepare(params: Params, client: str, artifacts: str | Path, root: str | Path = ".", overwrite: bool = False) -> Path:
    """``samfed_prepare@<client>``: the SAM-Fed client's store (its own data, at the client)."""
    from dsfed.data.store import build_client_store

    if client not in params.samfed.clients:
        raise DsfedError(f"samfed.clients.{client}: no such SAM-Fed client (have: {', '.join(params.samfed.clients) or 'none'})")
    from dsfed.stages.prepare import store_path

    return build_client_store(samfed_view(params), client, store_path(samfed_root(artifacts), client), root=root, overwrite=overwrite)


def run_samfed_public(params: Params, artifacts: str | Path, root: str | Path = ".", overwrite: bool = False) -> Path:
    """``samfed_public``: the server's labelled public set, from ``samfed.public`` (any importer)."""
    from dsfed.data.store import build_client_store

    _enabled(params)
    return build_client_store(samfed_view(params, with_public=True), PUBLIC, public_store(artifacts), root=root, overwrite=overwrite)


def run_samfed_teacher(params: Params, artifacts: str | Path) -> dict[str, Any]:
    from dsfed.runtime import pick_device
    from dsfed.samfed.server import train_teacher_stage

    _enabled(params)
    return train_teacher_stage(params.samfed, public_store(artifacts), teacher_folder(artifacts), params.seed, pick_device("auto"))


def run_samfed_init(params: Params, architecture: str, artifacts: str | Path) -> dict[str, Any]:
    from dsfed.runtime import pick_device
    from dsfed.samfed.server import train_init

    _enabled(params)
    if architecture not in params.samfed.architectures:
        raise DsfedError(f"samfed.architectures.{architecture}: no such architecture (have: {', '.join(params.samfed.architectures)})")
    return train_init(params.samfed, architecture, public_store(artifacts), init_folder(artifacts, architecture), params.seed,
                      pick_device("auto"))


def run_samfed_variant(params: Params, variant: str, artifacts: str | Path, params_path: str | Path | None = None) -> dict[str, Any]:
    """Train one SAM-Fed variant on ``federated.engine``: in this process, or through Flower (the ServerApp
    runs the same code against the SAM-Fed clients' nodes; ``params_path`` is then needed)."""
    from dsfed.samfed.run import run_variant

    _enabled(params)
    if variant not in params.samfed.variants:
        raise DsfedError(f"samfed.variants.{variant}: no such variant (have: {', '.join(params.samfed.variants)})")
    out = variant_folder(artifacts, variant)
    if params.federated.engine != "inprocess":
        from dsfed.stages.federated_outputs import run_on_engine
        from dsfed.stages.prepare import store_path

        if params_path is None:
            raise DsfedError(f"samfed@{variant}: federated.engine {params.federated.engine} needs the params file's path")
        root = samfed_root(artifacts)
        run_on_engine(params, Path(params_path), {"task": "samfed", "variant": variant}, Path(artifacts), out,
                      {name: store_path(root, name) for name in params.samfed.clients})
        cache = out / "client-cache"
        if not (cache.is_dir() and any(cache.iterdir())):
            cache.mkdir(parents=True, exist_ok=True)
            (cache / "README.txt").write_text("federated.engine: flower: each client caches the teacher's predictions at its own node\n")
        return dict(json.loads((out / "metrics.json").read_text()))
    return run_variant(params, variant, artifacts, out)


def produced_models(params: Params, artifacts: Path) -> list[ModelEntry]:
    """SAM-Fed's models: the teacher (merged LoRA-SAM), the public-only model per architecture, every variant."""
    cfg = params.samfed
    entries = [ModelEntry("teacher", "SAM teacher (LoRA on the public set)", teacher_folder(artifacts), "samfed",
                          note="server only: guides training, never deployed")]
    for arch, spec in cfg.architectures.items():
        entries.append(ModelEntry(f"public_only_{arch}", f"Public only ({spec.model}: lower bound)", init_folder(artifacts, arch), "samfed"))
    for name, variant in cfg.variants.items():
        folder = variant_folder(artifacts, name)
        label = VARIANT_LABELS.get(name, name)
        if variant.aggregation == "rcrf":   # its deployed models stay at the clients: this is the server's condensed one
            label = f"{label}: RC + RF server model"
        note = "uses the clients' labels" if variant.pseudo == "labels" else "clients keep their own models" if variant.aggregation == "rcrf" else ""
        entries.append(ModelEntry(name, label, folder, "samfed", [folder / "ledger.csv"], note=note))
    return entries


def run_samfed_evaluate(params: Params, artifacts: str | Path) -> dict[str, Any]:
    """``samfed_evaluate``: every SAM-Fed model on every SAM-Fed client's test split (the pipeline's evaluate code),
    plus each variant's pseudo-label quality and communication, into ``artifacts/samfed/eval/``."""
    from dsfed.io import write_json
    from dsfed.stages.evaluate import run_evaluate_stage

    _enabled(params)
    view = samfed_view(params)
    root = samfed_root(artifacts)
    metrics = run_evaluate_stage(view, root, entries=produced_models(params, Path(artifacts)), stage="samfed_evaluate",
                                 timings_root=artifacts)
    variants: dict[str, Any] = {}
    for name in params.samfed.variants:
        path = variant_folder(artifacts, name) / "metrics.json"
        if path.is_file():
            run = json.loads(path.read_text())
            variants[name] = {k: run[k] for k in ("curve", "selected_round", "communication", "test", "aggregation", "architectures")
                              if k in run}
    teacher = teacher_folder(artifacts) / "metrics.json"
    write_json(root / "eval" / "variants.json", {"variants": variants,
                                                 "teacher": json.loads(teacher.read_text()) if teacher.is_file() else {}})
    return metrics
