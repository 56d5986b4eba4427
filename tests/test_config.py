"""params.yaml models: the committed default validates; bad input names the field path."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from dsfed.config import ConfigError, load_params, parse_params, read_yaml

REPO = Path(__file__).resolve().parents[1]


def test_default_params_validate_with_paths() -> None:
    params = load_params(REPO / "params.yaml", check_paths=True)
    assert list(params.clients) == ["site_a", "site_b", "site_c", "site_d"]
    assert params.data.holdout == "site_d"
    assert params.training_clients == ["site_a", "site_b", "site_c"]
    assert params.federation == ["site_a", "site_b", "site_c", "site_d"] and params.redistill.cron == "0 2 * * *"
    assert all(c.source.kind == "phantom" and c.source.task == "fundus" for c in params.clients.values())


def _default() -> dict[str, Any]:
    return copy.deepcopy(read_yaml(REPO / "params.yaml"))


def _set(raw: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    *parents, last = dotted.split(".")
    node = raw
    for key in parents:
        node = node[key]
    node[last] = value
    return raw


@pytest.mark.parametrize(
    ("dotted", "value", "expected"),
    [
        ("data.image_szie", 64, "data.image_szie: unknown key"),
        ("data.image_size", 8, "data.image_size: Input should be greater than or equal to 16"),
        ("data.mask_size", 256, "data: mask_size 256 must be <= image_size 128"),
        ("data.holdout", "site_z", "data.holdout: no client named 'site_z'"),
        ("data.classes", ["disc", "disc"], "data.classes: class names must be unique"),
        ("prepare.split.val", 0.9, "prepare.split: val + test = 1.1 leaves nothing to train on"),
        ("clients.site_b.source.kind", "dicom", "clients.site_b.source: Input tag 'dicom' found using 'kind' does not match"),
        ("clients.site_b.source.n", 0, "clients.site_b.source.n: Input should be greater than or equal to 1"),
        ("clients.site_b.source.colour", "red", "clients.site_b.source.colour: unknown key"),
        ("clients.site_b.source.path", None, "clients.site_b.source.path: Input is not a valid path"),
        ("federated.clients", ["site_a", "site_x"], "federated.clients: no client named 'site_x'"),
        ("federated.clients", ["site_a", "site_a"], "federated.clients: a client is listed twice"),
        ("federated.clients", ["site_d"], "federated.min_clients: 2 is more than the 0 training clients"),
        ("redistill.cron", "every night", "redistill.cron: 'every night' is not a 5-field cron"),
        ("server_sam.checkpoint", None, "server_sam.checkpoint: required: the server SAM starts from a foundation checkpoint"),
    ],
)
def test_bad_values_name_the_field(dotted: str, value: Any, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_params(_set(_default(), dotted, value), root=REPO)
    assert any(p.startswith(expected) for p in info.value.problems), info.value.problems
    assert all("\n" not in p for p in info.value.problems)


def test_missing_folder_is_named_when_paths_are_checked(tmp_path: Path) -> None:
    raw = _default()
    raw["clients"]["site_b"] = {"source": {"kind": "feddg", "path": str(tmp_path / "nowhere"), "domain": "Domain1"}}
    parse_params(raw, root=REPO)  # paths are checked only on request (a server never sees client paths)
    with pytest.raises(ConfigError) as info:
        parse_params(raw, root=REPO, check_paths=True)
    assert info.value.problems == [f"clients.site_b.source.path: folder does not exist ({tmp_path / 'nowhere'})"]


def test_duplicate_client_names_are_refused(tmp_path: Path) -> None:
    text = (REPO / "params.yaml").read_text().replace("  site_c:", "  site_b:")
    (tmp_path / "params.yaml").write_text(text)
    with pytest.raises(ConfigError) as info:
        load_params(tmp_path / "params.yaml")
    (problem,) = info.value.problems
    assert "duplicate key 'site_b'" in problem and problem.startswith("line ")


def test_mask_mapping_classes_must_be_known(tmp_path: Path) -> None:
    raw = _default()
    raw["clients"]["site_b"] = {
        "source": {"kind": "folders", "path": str(tmp_path), "mask_mapping": {"values": {0: [], 255: ["rim"]}}}
    }
    with pytest.raises(ConfigError, match=r"clients.site_b.source.mask_mapping.values: unknown classes \['rim'\]"):
        parse_params(raw, root=REPO)


def test_partition_parts_must_be_distinct(tmp_path: Path) -> None:
    raw = _default()
    part = {"method": "dirichlet", "parts": 2, "alpha": 0.5}
    for name in ("site_a", "site_b"):
        raw["clients"][name]["source"] = {"kind": "phantom", "path": "data/phantom/sites.yaml", "site": "site_a", "n": 40,
                                          "partition": {**part, "index": 0}}
    with pytest.raises(ConfigError, match=r"clients.site_b.source.partition.index: part 0 is already taken by client 'site_a'"):
        parse_params(raw, root=REPO)
    raw["clients"]["site_b"]["source"]["partition"]["index"] = 1
    parse_params(raw, root=REPO)


def test_loading_params_imports_no_torch() -> None:
    """Config validation reads model names only: stages that need no model skip torch/MONAI (about 6 s)."""
    import subprocess
    import sys

    code = ("import sys; from dsfed.config import load_params; load_params('params.yaml'); "
            "print(sorted(m for m in ('torch', 'monai', 'segment_anything', 'diffusers') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_a_method_checkpoint_outside_the_pretrained_dir_is_refused(tmp_path: Path) -> None:
    """The federated stages depend on federated.pretrained_dir as a whole: a checkpoint elsewhere would be
    invisible to DVC (replacing it would retrain nothing), so it is refused with one line naming the method."""
    raw = _default()
    raw["federated"]["methods"]["fedsam"]["checkpoint"] = str(tmp_path / "sam_vit_b.pth")
    with pytest.raises(ConfigError) as info:
        parse_params(raw, root=REPO)
    (problem,) = info.value.problems
    assert problem.startswith("federated.methods.fedsam.checkpoint:") and "outside federated.pretrained_dir" in problem
    raw["federated"]["pretrained_dir"] = str(tmp_path)
    for method in ("centralized", "fedmsa", "fedtinysam"):
        raw["federated"]["methods"][method]["checkpoint"] = str(tmp_path / "sam_vit_b.pth")
    assert parse_params(raw, root=REPO).federated.pretrained_dir == tmp_path
