"""The samfed params section: one clear line for every reference or combination the stages cannot run."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from dsfed.config import ConfigError, parse_params
from tests.samfed.tiny import tiny_params


def _raw(tmp_path: Path) -> dict[str, Any]:
    return tiny_params(tmp_path).model_dump(mode="json")


def _problems(raw: dict[str, Any], tmp_path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        parse_params(raw, root=tmp_path)
    return "\n".join(info.value.problems)


def test_the_tiny_task_is_valid_and_enabled(tmp_path: Path) -> None:
    params = tiny_params(tmp_path)
    assert params.samfed.enabled and params.samfed.architecture_of("hetero", "c2") == "nnunet"
    assert params.samfed.architecture_of("hetero", "c1") == "unet"


@pytest.mark.parametrize(("edit", "expected"), [
    (lambda s: s["clients"]["c1"].update(labels="full"), "c1.labels: SAM-Fed clients are unlabelled"),
    (lambda s: s["variants"]["samfed"].update(clients={"c2": "nnunet"}), "FedAvg averages one architecture"),
    (lambda s: s["variants"]["samfed"].update(model="resnet"), "samfed.variants.samfed.model: no architecture 'resnet'"),
    (lambda s: s["variants"]["hetero"]["clients"].update(c9="unet"), "samfed.variants.hetero.clients: no client 'c9'"),
    (lambda s: s["public"].update(other=copy.deepcopy(s["public"]["pub"])), "samfed.public: one public set, got 2"),
    (lambda s: s["teacher"].update(model="unet"), "not a SAM-family model"),
    (lambda s: s.update(min_clients=3), "samfed.min_clients: 3 is more than the 2 clients"),
    (lambda s: s["agreement"].update(start=0.7), "needs low <= start <= high"),
    (lambda s: s["clients"].update(public=copy.deepcopy(s["clients"]["c1"])), "not 'public'"),
])
def test_bad_settings_give_one_line_naming_the_field(tmp_path: Path, edit: Any, expected: str) -> None:
    raw = _raw(tmp_path)
    edit(raw["samfed"])
    assert expected in _problems(raw, tmp_path)


def test_no_public_set_means_no_samfed_task(tmp_path: Path) -> None:
    raw = _raw(tmp_path)
    raw["samfed"].update(public={}, variants={})
    assert not parse_params(raw, root=tmp_path).samfed.enabled
    raw["samfed"]["variants"] = {"v": {"model": "unet"}}
    assert "the variants need the server's labelled public set" in _problems(raw, tmp_path)
