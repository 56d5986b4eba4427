"""The SAM-Fed stage set under a real `dvc repro` in a temporary git + DVC copy of the project."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from dsfed.config import parse_params
from tests.conftest import ModuleTmp, dvc_project, run_ok, stages_run
from tests.samfed.tiny import tiny_params

pytestmark = pytest.mark.slow


def _params(root: Path) -> dict[str, Any]:
    raw = tiny_params(root, rounds=2).model_dump(mode="json")
    for spec in [*raw["samfed"]["clients"].values(), *raw["samfed"]["public"].values()]:
        spec["source"]["path"] = "data/phantom/samfed_sites.yaml"
    raw["samfed"]["teacher"]["checkpoint"] = "data/pretrained/embedded/sam_demo.safetensors"
    raw["clients"]["x"]["source"]["path"] = "data/phantom/samfed_sites.yaml"
    raw["federated"]["methods"] = {}
    return parse_params(raw, root=root).model_dump(mode="json")


def _build(root: Path, prefect_api: str | None) -> tuple[dict[str, str], str]:
    """The tiny SAM-Fed project in ``root`` after its first ``dvc repro`` of every SAM-Fed stage: (environment, output)."""
    root.mkdir()
    env = dvc_project(root, _params(root), api_url=prefect_api, portable=True)
    return env, run_ok([sys.executable, "-m", "dvc", "repro", "--glob", "samfed_evaluate@*"], root, env)


def _output_hashes(root: Path) -> dict[tuple[str, str], str]:
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    return {(stage, out["path"]): out["md5"] for stage, entry in lock.items() for out in entry.get("outs", [])}


@pytest.fixture(scope="module")
def built(module_tmp: ModuleTmp, prefect_api: str) -> tuple[Path, dict[str, str], str]:
    root = module_tmp("samfed") / "repo"
    return (root, *_build(root, prefect_api))


def test_samfed_stages_run_under_dvc_then_nothing_reruns(built: tuple[Path, dict[str, str], str]) -> None:
    root, env, first = built
    ran = stages_run(first)
    assert sorted(ran) == sorted(["samfed_public@pub", "samfed_prepare@c1", "samfed_prepare@c2", "samfed_teacher@pub",
                                  "samfed_init@unet", "samfed_init@nnunet", "samfed@samfed", "samfed@supervised", "samfed@hetero",
                                  "samfed_evaluate@pub"])
    metrics = json.loads((root / "artifacts/samfed/eval/metrics.json").read_text())
    assert set(metrics["models"]) == {"teacher", "public_only_unet", "public_only_nnunet", "samfed", "supervised", "hetero"}
    assert set(metrics["source_clients"]) == {"c1", "c2"}
    summary = json.loads((root / "artifacts/samfed/eval/variants.json").read_text())
    assert summary["variants"]["hetero"]["architectures"] == {"c1": "unet", "c2": "nnunet"}
    second = run_ok([sys.executable, "-m", "dvc", "repro", "--glob", "samfed_evaluate@*"], root, env)
    assert stages_run(second) == []
    out = run_ok([sys.executable, "-m", "dsfed_pipeline.flows.samfed", "summary"], root, env)
    assert "expected ordering needs" in out and "# SAM-Fed" in out   # the tiny task has no self-training variant


def test_a_second_copy_elsewhere_gives_byte_identical_output_hashes(built: tuple[Path, dict[str, str], str],
                                                                    tmp_path: Path,
                                                                    prefect_api: str) -> None:
    """Issue 16: every SAM-Fed output (stores, teacher, variants with their round checkpoints, evaluation) has the
    same bytes when the same project is built in another folder."""
    root = built[0]
    other = tmp_path / "repo"
    _build(other, prefect_api)
    first, again = _output_hashes(root), _output_hashes(other)
    assert set(again) == set(first)
    differing = sorted(f"{stage}: {path}" for (stage, path), md5 in again.items() if md5 != first[(stage, path)])
    assert not differing, f"{len(differing)} of {len(again)} output hashes differ:\n" + "\n".join(differing)
