"""Model cards: what a hospital receives beside a model (``model_card.json`` and ``MODEL_CARD.md``).

A card says what the model is (architecture, parameters, the input it expects and how to prepare it), how it
was trained (method, the stage that wrote it, rounds, clients, that no image left a client), how well it does
(test Dice with its bootstrap interval, IoU and HD95 per client, the held-out client apart), what it cost
(communication, GFLOPs), what it is for and where it stops, and where it came from (commit, params hash, code
hash, weights hash, the date the card was written).

Cards are written when a model is handed over (``dsfed card``, and ``dsfed export`` into its export), not as a
DVC output: a commit and a date in a hashed output would give every rerun new bytes (issue 16).
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dsfed.config import Params
from dsfed.deploy.models import ResolvedModel
from dsfed.errors import DsfedError
from dsfed.io import atomic_path, sha256_file, write_json
from dsfed.report.contents import git_commit
from dsfed.report.tables import fmt

__all__ = ["CARD_JSON", "CARD_MD", "build_card", "card_markdown", "write_card"]

CARD_JSON = "model_card.json"
CARD_MD = "MODEL_CARD.md"


def _stage(entry_folder: Path, artifacts: Path) -> str | None:
    """The DVC stage that wrote a model folder under ``artifacts`` (None for a folder elsewhere)."""
    try:
        parts = entry_folder.resolve().relative_to(artifacts.resolve()).parts
    except ValueError:
        return None
    if parts[:1] == ("federated",) and len(parts) > 1:
        return f"federated@{parts[1]}"
    if parts[:2] == ("samfed", "variants") and len(parts) > 2:
        return f"samfed@{parts[2]}"
    return {"distill": "distill", "server_sam": "server_sam"}.get(parts[0]) if parts else None


def _json(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text())) if path.is_file() else {}


def build_card(model: ResolvedModel, params: Params, params_path: Path, artifacts: Path) -> dict[str, Any]:
    """The card of ``model`` from its own card (``model.json``), ``evaluate``'s metrics and its stage's metrics."""
    from dsfed.provenance import code_hash

    entry = model.entry
    own = _json(entry.folder / "model.json")
    weights = entry.checkpoint or entry.folder / "model.safetensors"
    if not weights.is_file():
        raise DsfedError(f"{weights}: no weights to describe")
    ev_path = artifacts / ("samfed/eval/metrics.json" if entry.group == "samfed" else "eval/metrics.json")
    scored = _json(ev_path).get("models", {}).get(entry.key)
    stage_metrics = _json(entry.folder / "metrics.json")
    data = params.data
    options = own.get("options", {})
    clients = list(params.samfed.clients) if entry.group == "samfed" else list(params.training_clients)
    return {
        "name": entry.key,
        "label": model.label,
        "architecture": {"model": own.get("model", entry.build[0] if entry.build else None), "parameters": own.get("parameters"),
                         "model_input_size": options.get("input_size"), "prompt": options.get("prompt", "none")},
        "input": {"classes": list(data.classes), "image": "RGB, 8 bits per channel, scaled to [0, 1]",
                  "resize": f"{data.resize} to {data.image_size} x {data.image_size} (as prepare does; dsfed predict undoes it)",
                  "output": f"one logit map per class at {data.mask_size} x {data.mask_size}; foreground where the logit > 0"},
        "training": {"group": entry.group, "stage": _stage(entry.folder, artifacts), "clients": clients,
                     "holdout": data.holdout, "images_shared": False,
                     "rounds": stage_metrics.get("communication", {}).get("rounds"), "selected_round": stage_metrics.get("selected_round"),
                     "strategy": stage_metrics.get("strategy"),
                     "selected_by": own.get("selected_by", "client validation" if stage_metrics.get("selected_round") is not None else None)},
        "evaluation": ({"source": str(ev_path), "clients": scored["clients"], "source_mean": scored["source_mean"],
                        "holdout": scored.get("holdout"), "ci": _json(ev_path).get("ci")} if scored else None),
        "efficiency": scored["efficiency"] if scored else None,
        "intended_use": ("Research and evaluation of federated segmentation of the classes above on images like the clients'. "
                         "Not a medical device: not for diagnosis or treatment decisions."),
        "limits": [f"Trained and tested on {', '.join(sorted({c.source.kind for c in params.clients.values()}))} data of "
                   f"{len(params.clients)} clients; on other scanners, sites or populations expect the held-out client's figure "
                   "or worse, and check on your own labelled sample first.",
                   "A prompt-free model: it segments every image it is given, including images without the structures."],
        "provenance": {**git_commit(params_path.resolve().parent), "params_sha256": hashlib.sha256(params_path.read_bytes()).hexdigest(),
                       "code_hash": code_hash(), "weights": str(weights), "weights_sha256": sha256_file(weights),
                       "written": datetime.now(timezone.utc).isoformat(timespec="seconds")},
    }


def card_markdown(card: dict[str, Any]) -> str:
    """The card as Markdown: a title, the facts, one table row per client."""
    arch, inp, train, prov = card["architecture"], card["input"], card["training"], card["provenance"]
    lines = [f"# Model card: {card['label']}", "", f"`{card['name']}`: {arch['model']}, {arch['parameters']:,} parameters, "
             f"runs at {arch['model_input_size']} px.", "", "## Input and output", "",
             f"- Classes: {', '.join(inp['classes'])}", f"- Image: {inp['image']}; {inp['resize']}", f"- Output: {inp['output']}", "",
             "## Training", "", f"- Produced by the `{train['stage']}` stage ({train['group']})" if train["stage"] else f"- Group: {train['group']}",
             f"- Clients: {', '.join(train['clients'])}; held out: {train['holdout'] or 'none'}; no image left a client",
             f"- Rounds: {train['rounds']}, selected round {train['selected_round']} ({train['selected_by']})"
             if train["rounds"] is not None else f"- Selected by: {train['selected_by'] or 'its stage'}", ""]
    ev = card["evaluation"]
    if ev:
        lines += ["## Test results", "", f"{int((ev['ci'] or 0.95) * 100)} % bootstrap interval of the per-image Dice.", "",
                  "| client | images | Dice | interval | IoU | HD95 (px) |", "|---|---|---|---|---|---|"]
        for client, m in ev["clients"].items():
            lo, hi = m.get("dice_ci") or [None, None]
            held = " (held out)" if client == train["holdout"] else ""
            lines.append(f"| {client}{held} | {m.get('n')} | {fmt(m.get('dice'))} | [{fmt(lo, 2)}, {fmt(hi, 2)}] | {fmt(m.get('iou'))} | {fmt(m.get('hd95'), 1)} |")
        lines += ["", f"Source-client mean Dice {fmt(ev['source_mean'].get('dice'))}."]
        if card["efficiency"]:
            e = card["efficiency"]
            lines += ["", f"Cost: communication {e['communication_bytes'] / 1e6:.1f} MB; {fmt(e.get('gflops_per_image'), 2)} GFLOPs per image."]
    else:
        lines += ["## Test results", "", "Not evaluated yet (run `dvc repro evaluate`)."]
    lines += ["", "## Intended use", "", card["intended_use"], "", "## Limits", "", *[f"- {x}" for x in card["limits"]], "",
              "## Provenance", "", f"- Commit: {prov['commit'] or 'not a git checkout'}{' (with uncommitted changes)' if prov['uncommitted_changes'] else ''}",
              f"- params.yaml SHA-256: {prov['params_sha256']}", f"- Code hash: {prov['code_hash']}",
              f"- Weights: {prov['weights']} (SHA-256 {prov['weights_sha256']})", f"- Card written: {prov['written']}", ""]
    return "\n".join(lines)


def write_card(card: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """``out/model_card.json`` and ``out/MODEL_CARD.md``, each atomically."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / CARD_JSON, card)
    with atomic_path(out / CARD_MD, overwrite=True) as tmp:
        tmp.write_text(card_markdown(card))
    return out / CARD_JSON, out / CARD_MD
