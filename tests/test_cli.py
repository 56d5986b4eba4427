"""The dsfed command: complete --help, validation messages and exit codes, store inspection."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, phantom_client, small_params  # noqa: F401

DSFED = [sys.executable, "-m", "dsfed"]


def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DSFED, *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize("command", [[], ["config"], ["config", "validate"], ["config", "dump"], ["pretrain"], ["data"], ["data", "show"], ["data", "preview"], ["prepare"],
                                     ["predict"], ["export"], ["card"]])
def test_help_is_complete(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout and "--help" in result.stdout


def test_validate_default_params() -> None:
    result = run("config", "validate")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines() == [
        "params.yaml: OK (4 clients: site_a, site_b, site_c, site_d, held out: site_d)",
        "SAM-Fed: public set derm_public, 4 unlabelled clients (derm_1, derm_2, derm_3, derm_4), 12 variants (samfed, selftrain, "
        "sam_pseudo, supervised, no_agreement, no_kd, fixed_tau, samfed_nn, selftrain_nn, supervised_nn, samfed_hetero, hssf)"]


def test_validate_refuses_params_without_the_samfed_mappings(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text(json.dumps({"clients": {"a": phantom_client("site_a")}}))
    (tmp_path / "sites.yaml").write_text((REPO / "data/phantom/sites.yaml").read_text())
    result = run("config", "validate", str(tmp_path / "params.yaml"))
    assert result.returncode == 2
    assert result.stderr.strip() == (f"error: {tmp_path / 'params.yaml'}: samfed: needs public, clients, architectures, variants for "
                                     "dvc.yaml's SAM-Fed stages (for no SAM-Fed task: `samfed: {public: {}, clients: {}, "
                                     "architectures: {}, variants: {}}`)")


def test_dump_fills_every_default(tmp_path: Path) -> None:
    import yaml

    (tmp_path / "params.yaml").write_text(json.dumps({"clients": {"a": phantom_client("site_a")}}))
    (tmp_path / "sites.yaml").write_text((REPO / "data/phantom/sites.yaml").read_text())
    result = run("config", "dump", str(tmp_path / "params.yaml"))
    assert result.returncode == 0, result.stderr
    dumped = yaml.safe_load(result.stdout)
    assert dumped["federated"]["loss"] == {"name": "bce_dice", "pos_weight": 2.0, "dice": 0.0}
    assert dumped["data"]["classes"] == ["optic_disc", "optic_cup"] and dumped["clients"]["a"]["source"]["n"] == 12
    (tmp_path / "full.yaml").write_text(result.stdout)
    assert run("config", "validate", str(tmp_path / "full.yaml"), "--no-check-paths").returncode == 0


def test_validate_names_each_checkpoint_whose_class_head_will_be_reinitialised(tmp_path: Path) -> None:
    text = (REPO / "params.yaml").read_text().replace("classes: [optic_disc, optic_cup]", "classes: [vessel, artery, vein]")
    text = text.replace("prompt: a retinal fundus photograph", "prompt: a chest x-ray")
    (tmp_path / "params.yaml").write_text(text)
    (tmp_path / "data").symlink_to(REPO / "data")  # the shipped foundation SAM (4 classes), ControlNet, backbone
    result = run("config", "validate", str(tmp_path / "params.yaml"))
    assert result.returncode == 0, result.stderr
    controlnet, prompt, *notes = [line for line in result.stdout.strip().splitlines() if line.startswith("note:")]
    assert [n.split(":")[1].strip() for n in notes] == ["federated.methods.fedtinysam.checkpoint", "federated.methods.fedsam.checkpoint",
                                                       "federated.methods.fedmsa.checkpoint", "federated.methods.centralized.checkpoint",
                                                       "server_sam.checkpoint"]
    classes = "['vessel', 'artery', 'vein']"
    assert all(f"has a head for ['optic_disc', 'optic_cup', 'lesion', 'polyp'], not {classes}: its class head is re-initialised" in n
               for n in notes)
    # the generic ControlNet loads (class-agnostic condition image) but never saw 3-class masks; the prompt is unknown
    assert controlnet.startswith("note: backbone.controlnet:") and f"3 classes {classes}" in controlnet
    assert "it knows 1 and 2-class masks" in controlnet
    assert prompt.startswith("note: backbone.prompt: 'a chest x-ray' is not one the embedded backbone learnt")


def test_validate_reports_one_line_per_problem(tmp_path: Path) -> None:
    text = (REPO / "params.yaml").read_text()
    text = text.replace("image_size: 128", "image_size: 128\n  colour: red", 1).replace("site: site_a, n: 80", "site: site_a, n: -1", 1)
    (tmp_path / "params.yaml").write_text(text)
    (tmp_path / "data/phantom").mkdir(parents=True)
    for table in ("sites.yaml", "samfed_sites.yaml"):
        (tmp_path / "data/phantom" / table).write_text((REPO / "data/phantom" / table).read_text())
    (tmp_path / "data/pretrained").symlink_to(REPO / "data/pretrained")  # backbone.path and .controlnet exist
    result = run("config", "validate", str(tmp_path / "params.yaml"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"error: {tmp_path / 'params.yaml'}: data.colour: unknown key",
        f"error: {tmp_path / 'params.yaml'}: clients.site_a.source.n: Input should be greater than or equal to 1",
    ]


def test_prepare_show_and_preview(tmp_path: Path) -> None:
    (tmp_path / "sites.yaml").write_text((REPO / "data/phantom/sites.yaml").read_text())
    (tmp_path / "params.yaml").write_text(
        json.dumps({"data": {"image_size": 32, "mask_size": 16, "holdout": "b"},
                    "clients": {"a": phantom_client("site_a", n=6), "b": phantom_client("site_b", n=4)}})
    )
    for client in ("a", "b"):
        assert run("prepare", client, cwd=tmp_path).returncode == 0
    shown = run("data", "show", "a", "b", "--json", cwd=tmp_path)
    rows = json.loads(shown.stdout)
    assert [(r["client"], r["role"], r["train"], r["val"], r["test"]) for r in rows] == [("a", "client", 4, 1, 1), ("b", "holdout", 0, 0, 4)]
    assert 0.0 < rows[0]["fg_optic_cup"] < rows[0]["fg_optic_disc"] < 0.2
    preview = run("data", "preview", "a", "b", "-o", "grid.png", cwd=tmp_path)
    assert preview.returncode == 0 and (tmp_path / "grid.png").stat().st_size > 1000

    missing = run("prepare", "zz", cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.strip() == "error: clients.zz: no such client in params (have: a, b)"


def test_bad_input_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "hosp/images").mkdir(parents=True)
    (tmp_path / "hosp/masks").mkdir()
    for stem in ("a", "b", "c"):
        Image.new("RGB", (20, 20)).save(tmp_path / f"hosp/images/{stem}.png")
        Image.new("L", (20, 20)).save(tmp_path / f"hosp/masks/{stem}_mask.png")
    (tmp_path / "hosp/masks/b_mask.png").write_bytes(b"not a png")  # corrupt, in the middle of the set
    (tmp_path / "params.yaml").write_text(json.dumps({
        "data": {"classes": ["lesion"], "image_size": 16, "mask_size": 8},
        "clients": {"h1": {"source": {"kind": "folders", "path": "hosp", "mask_mapping": {"values": {"0": [], "255": ["lesion"]}}}}},
    }))
    result = run("prepare", "h1", cwd=tmp_path)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {tmp_path / 'hosp/masks/b_mask.png'}: cannot read mask (not a recognised image format)"]
    assert not (tmp_path / "artifacts").exists()


TINY_SPEC = """
backbone: {sample_size: 16, block_out_channels: [16, 32], down_block_types: [DownBlock2D, CrossAttnDownBlock2D],
           up_block_types: [CrossAttnUpBlock2D, UpBlock2D], cross_attention_dim: 8, attention_head_dim: 8, norm_num_groups: 4}
backbone_train: {steps: 2, batch_size: 4, amp: false}
controlnet_train: {steps: 2, batch_size: 4, amp: false, seed: 1}
sampler: {steps: 2}
grid_n: 2
eval_n: 3
"""


def test_pretrain_retrains_at_tiny_size(tmp_path: Path) -> None:
    """`dsfed pretrain` is the documented switch that remakes the shipped weights; here at tiny size."""
    (tmp_path / "tiny.yaml").write_text(TINY_SPEC)
    out = tmp_path / "weights"
    result = run("pretrain", str(out), "--spec", str(tmp_path / "tiny.yaml"), "--corpus-n", "6", "--device", "cpu", "--workers", "0")
    assert result.returncode == 0, result.stderr
    assert {p.name for p in out.iterdir()} == {"backbone", "controlnet.safetensors", "losses.json", "grid.png", "pretrain.json"}
    written = json.loads((out / "pretrain.json").read_text())
    assert written["params"]["backbone_spec"]["sample_size"] == 16 and written["params"]["corpus_n"] == 6
    assert json.loads(result.stdout)["out"] == str(out)
    again = run("pretrain", str(out), "--spec", str(tmp_path / "tiny.yaml"), "--corpus-n", "6")
    assert again.returncode == 2 and again.stderr.strip() == f"error: {out}: already exists (pass --overwrite to replace it)"
    (tmp_path / "bad.yaml").write_text("backbone_train: {stpes: 3}\n")
    bad = run("pretrain", str(tmp_path / "w2"), "--spec", str(tmp_path / "bad.yaml"))
    assert bad.returncode == 2 and bad.stderr.strip() == f"error: {tmp_path / 'bad.yaml'}: backbone_train.stpes: unknown key"
    unknown = run("pretrain", str(tmp_path / "w3"), "--tasks", "fundus,xray")
    assert unknown.returncode == 2 and unknown.stderr.strip() == "error: --tasks 'fundus,xray': choose from fundus, skin, polyp"
    assert json.loads(result.stdout)["checks"].keys() == {"fundus", "skin", "polyp"}
