"""``dsfed ablate``: the paper's Table 4 rows and the lam / selection-rate sweep, gathered into one table.

Every variant reruns the distillation from the same starting models (``artifacts/server_sam`` and the
federated student; never warm-started) with ``params.distill`` overridden, then scores both distilled
models on every client's test split: the unguarded ones (selected on synthetic validation, as the paper
does), since the guard would hide a variant that hurts behind the undistilled model; what the guard
would ship is a column of its own. Results go to ``artifacts/ablation/``: ``runs/<variant>/`` (the
distill outputs), ``table.json`` and ``table.md``; the report stage (which depends on the folder)
includes the table on the next ``dvc repro``.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dsfed.config import Params
from dsfed.io import atomic_path, write_json

__all__ = ["TABLE4", "ablation_variants", "run_ablation"]

log = logging.getLogger(__name__)

# The paper's Table 4: one-way vs mutual distillation, without vs with learnability-guided selection.
TABLE4: dict[str, dict[str, Any]] = {
    "one-way, all samples": {"mutual": False, "selection": "all"},
    "one-way, learnability pool": {"mutual": False, "selection": "pool"},
    "mutual, all samples": {"mutual": True, "selection": "all"},
    "mutual, learnability pool (DSFedMed)": {"mutual": True, "selection": "pool"},
}


def ablation_variants(params: Params, sweep: Iterable[str] = ("table4", "lam", "rate", "batch_topk"),
                      lams: Iterable[float] = (0.0, 0.25, 0.5, 0.75, 1.0), rates: Iterable[float] = (0.2, 0.5, 0.8)) -> dict[str, dict[str, Any]]:
    """Variant name -> ``distill`` overrides (duplicates of an earlier variant's settings are dropped)."""
    base = params.distill.model_dump(mode="json")
    variants: dict[str, dict[str, Any]] = {}
    sweep = set(sweep)
    if "table4" in sweep:
        variants.update(TABLE4)
    if "lam" in sweep:
        variants.update({f"lam {lam:g}": {"mutual": True, "selection": "pool", "lam": lam} for lam in lams})
    if "rate" in sweep:
        variants.update({f"rate {rate:g}": {"mutual": True, "selection": "pool", "rate": rate} for rate in rates})
    if "batch_topk" in sweep:
        variants["released code's batch_topk rule"] = {"mutual": True, "selection": "batch_topk"}
    unique: dict[str, dict[str, Any]] = {}
    seen: list[dict[str, Any]] = []
    for name, overrides in variants.items():
        full = {**base, **overrides}
        if full not in seen:
            seen.append(full)
            unique[name] = overrides
    return unique


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-").replace("--", "-")


def run_ablation(params: Params, artifacts: str | Path, variants: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Distil and score each variant; write ``artifacts/ablation/table.{json,md}``; returns the table."""
    from dsfed.config import parse_params
    from dsfed.evaluation.suite import load_test_sets, score_on_tests, source_mean
    from dsfed.models.card import load_carded_model
    from dsfed.runtime import pick_device
    from dsfed.stages.distill import run_distill_stage

    artifacts = Path(artifacts)
    out = artifacts / "ablation"
    from dsfed.stages.prepare import store_path

    tests = load_test_sets({name: store_path(artifacts, name) for name in params.clients})
    device = pick_device(params.distill.device)
    holdout = params.data.holdout
    header = ["variant", "mutual", "selection", "lam", "rate", "guard ships", "student source Dice", "SAM source Dice"]
    if holdout:
        header += [f"student {holdout} Dice", f"SAM {holdout} Dice"]
    rows: list[list[Any]] = []
    records = []
    for name, overrides in variants.items():
        raw = params.model_dump(mode="json")
        raw["distill"] = {**raw["distill"], **overrides, "warm_start": False}
        # an experimenter's tool (it scores every client's test split here): in this process whatever the engine
        raw["federated"] = {**raw["federated"], "engine": "inprocess"}
        variant = parse_params(raw)
        run_dir = out / "runs" / _slug(name)
        if run_dir.exists():
            shutil.rmtree(run_dir)
        log.info("ablation: %s (%s)", name, overrides)
        metrics = run_distill_stage(variant, artifacts, out=run_dir)
        scores: dict[str, Any] = {}
        for stem in ("tiny", "sam"):
            model = load_carded_model(run_dir / "unguarded" / stem, len(params.data.classes), params.data.mask_size, device=device)
            per_client, _, _ = score_on_tests(model, tests, variant, device)
            scores[stem] = {"source": source_mean(per_client, variant.training_clients).get("dice"),
                            "holdout": per_client[holdout]["dice"] if holdout else None, "clients": per_client}
            del model
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # keep the models and curves, not the resume state
        d = variant.distill
        kept = metrics["guard"]["tiny"]
        ships = "undistilled" if kept["round"] is None else f"round {kept['round']}"
        row = [name, d.mutual, d.selection, d.lam, d.rate, ships, round(scores["tiny"]["source"], 4), round(scores["sam"]["source"], 4)]
        if holdout:
            row += [round(scores["tiny"]["holdout"], 4), round(scores["sam"]["holdout"], 4)]
        rows.append(row)
        records.append({"variant": name, "overrides": overrides, "scores": scores, "distill": metrics["synthetic_val_dice"],
                        "guard": metrics["guard"]})
    table: dict[str, Any] = {"header": header, "rows": [[str(c) if not isinstance(c, float) else f"{c:.3f}" for c in r] for r in rows], "variants": records}
    write_json(out / "table.json", table)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in table["rows"]]
    with atomic_path(out / "table.md", overwrite=True) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return table
