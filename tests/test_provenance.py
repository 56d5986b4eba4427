"""The code hashes that outputs carry cover only code their stage lists as a DVC dependency.

A hash over more than the stage's deps would make a stage's bytes change on a rerun after an edit DVC rightly
ignores (the generators of two clones a few commits apart differed only in it), or key its checkpoints by code
DVC does not watch; the checks below fail when a module list and ``dvc.yaml`` drift apart.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dsfed.provenance import CONTROLNET_CODE, DISTILL_CODE, FEDERATED_CODE, ROUNDS_CODE, SYNTHESIZE_CODE
from dsfed.samfed.run import SAMFED_CODE

ROOT = Path(__file__).resolve().parents[1]


def _code_deps(stage: str) -> set[str]:
    """The stage's ``dsfed/...`` deps in the committed ``dvc.yaml``, relative to the package."""
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]
    spec = spec.get("do", spec)
    paths = [d if isinstance(d, str) else next(iter(d)) for d in spec.get("deps", [])]
    return {p.removeprefix("dsfed/") for p in paths if p.startswith("dsfed/")}


def _covered(part: str, deps: set[str]) -> bool:
    return any(part == d or part.startswith(d + "/") for d in deps)


@pytest.mark.parametrize(
    ("stage", "parts"),
    [("controlnet", CONTROLNET_CODE), ("synthesize", SYNTHESIZE_CODE), ("federated", FEDERATED_CODE),
     ("distill", DISTILL_CODE), ("samfed", ROUNDS_CODE + SAMFED_CODE)],
)
def test_a_stages_code_hash_covers_only_its_dvc_deps(stage: str, parts: tuple[str, ...]) -> None:
    deps = _code_deps(stage)
    assert deps, f"no dsfed deps found for {stage}"
    missing = [p for p in parts if not _covered(p, deps)]
    assert not missing, f"{stage}'s code hash covers {missing}, which dvc.yaml does not list as its deps"
    for part in parts:
        assert (ROOT / "dsfed" / part).exists(), part
