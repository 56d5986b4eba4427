"""Model cards: written for a model folder from its stage's metrics and ``evaluate``'s, with provenance."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from dsfed.config import load_params
from dsfed.deploy.card import CARD_JSON, CARD_MD, build_card, card_markdown, write_card
from dsfed.deploy.models import resolve_model
from dsfed.errors import DsfedError
from dsfed.models import build_model
from dsfed.server.outputs import save_model
from tests.conftest import phantom_client


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A git checkout with params.yaml (clients a, b; h held out), fedunet's folder and evaluate's metrics."""
    params = {"data": {"image_size": 32, "mask_size": 16, "holdout": "h"},
              "federated": {"methods": {"fedunet": {"model": "unet", "input_size": 32}}},
              "clients": {c: phantom_client(site) for c, site in (("a", "site_a"), ("b", "site_b"), ("h", "site_d"))}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    torch.manual_seed(0)
    folder = tmp_path / "artifacts/federated/fedunet"
    save_model(folder, build_model("unet", num_classes=2, output_size=16, input_size=32), "unet", 32)
    (folder / "metrics.json").write_text(json.dumps({"communication": {"rounds": 8}, "selected_round": 6, "strategy": "fedavg"}))
    (folder / "ledger.csv").write_text("round,client,direction,what,bytes\n")
    scores = {c: {"n": 4, "dice": d, "dice_ci": [d - 0.05, d + 0.04], "iou": d - 0.1, "hd95": 3.5} for c, d in (("a", 0.81), ("b", 0.79), ("h", 0.7))}
    ev = {"ci": 0.95, "order": ["fedunet"], "models": {"fedunet": {
        "label": "FedU-Net", "group": "federated", "clients": scores, "source_mean": {"dice": 0.8}, "holdout": scores["h"],
        "efficiency": {"parameters": 1000, "communication_bytes": 12_500_000, "gflops_per_image": 0.1, "note": ""}}}}
    (tmp_path / "artifacts/eval").mkdir(parents=True)
    (tmp_path / "artifacts/eval/metrics.json").write_text(json.dumps(ev))
    for args in (["init", "-q"], ["add", "params.yaml"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "params"]):
        subprocess.run(["git", *args], cwd=tmp_path, check=True)
    return tmp_path


def test_a_card_says_what_how_how_well_and_where_from(project: Path) -> None:
    params = load_params(project / "params.yaml")
    chosen = resolve_model("fedunet", params, project / "artifacts")
    card = build_card(chosen, params, project / "params.yaml", project / "artifacts")
    assert card["architecture"]["model"] == "unet" and card["architecture"]["model_input_size"] == 32
    assert card["training"]["stage"] == "federated@fedunet" and card["label"] == "FedU-Net"
    assert (card["training"]["rounds"], card["training"]["selected_round"], card["training"]["images_shared"]) == (8, 6, False)
    assert card["training"]["clients"] == ["a", "b"] and card["training"]["holdout"] == "h"
    assert card["evaluation"]["holdout"]["dice"] == 0.7 and card["efficiency"]["communication_bytes"] == 12_500_000
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True).stdout.strip()
    prov = card["provenance"]
    assert prov["commit"] == head and prov["uncommitted_changes"] is False
    assert prov["params_sha256"] == hashlib.sha256((project / "params.yaml").read_bytes()).hexdigest()
    md = card_markdown(card)
    assert "| h (held out) | 4 | 0.700 | [0.65, 0.74] |" in md and "Produced by the `federated@fedunet` stage" in md
    assert "Not a medical device" in md and head in md
    paths = write_card(card, project / "cards")
    assert [p.name for p in paths] == [CARD_JSON, CARD_MD] and json.loads(paths[0].read_text()) == card


def test_a_model_folder_elsewhere_and_a_missing_one(project: Path, tmp_path: Path) -> None:
    params = load_params(project / "params.yaml")
    elsewhere = tmp_path / "handed-over"
    save_model(elsewhere, build_model("unet", num_classes=2, output_size=16, input_size=32), "unet", 32)
    card = build_card(resolve_model(str(elsewhere), params, project / "artifacts"), params, project / "params.yaml", project / "artifacts")
    assert card["training"]["stage"] is None and card["evaluation"] is None
    assert "Not evaluated yet" in card_markdown(card)
    with pytest.raises(DsfedError, match="no such model name or path"):
        resolve_model("fedsam", params, project / "artifacts")
