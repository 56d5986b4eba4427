"""``dsfed preset paper-fundus``: the paper's configuration, wired to stand-in files in the official layouts.

The stand-ins: segment-anything's own ViT-B builder saved as ``sam_vit_b_01ec64.pth``, TinySAM's official
key layout, a tiny Stable Diffusion 1.5 diffusers folder, and a FedDG fundus tree. The test writes the
preset, validates it with path checks, then loads every checkpoint through the code the stages use.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from segment_anything import sam_model_registry

from dsfed.config import load_params
from dsfed.data.store import ClientStore, build_client_store
from dsfed.generation.backbones import prepare_backbone
from dsfed.models import build_model
from dsfed.stages.federated_run import model_factory
from dsfed.stages.prepare import store_path
from tests.conftest import ModuleTmp
from tests.data.test_importers import fundus_mask, rgb, save
from tests.generation.test_stable_diffusion import build_sd_folder

pytestmark = pytest.mark.slow


def feddg_tree(root: Path) -> Path:
    for d, domain in enumerate(("Domain1", "Domain2", "Domain3", "Domain4")):
        for split, n in (("train", 4), ("test", 2)):
            for i in range(n):
                save(root / domain / split / "ROIs/image" / f"{domain}_{i}.png", rgb(10 * d + i))
                save(root / domain / split / "ROIs/mask" / f"{domain}_{i}.png", fundus_mask())
    return root


@pytest.fixture(scope="module")
def preset(module_tmp: ModuleTmp) -> Path:
    root = module_tmp("preset")
    torch.manual_seed(0)
    torch.save(sam_model_registry["vit_b"]().state_dict(), root / "sam_vit_b_01ec64.pth")
    torch.save(build_model("tinysam", num_classes=1, output_size=256).sam.state_dict(), root / "tinysam.pth")
    build_sd_folder(root / "sd15")
    feddg_tree(root / "Fundus")
    (root / "params.yaml").write_text("seed: 1\n# the user's own file\n")
    cmd = [sys.executable, "-m", "dsfed", "preset", "paper-fundus", "--data", "Fundus", "--sam", "sam_vit_b_01ec64.pth",
           "--tinysam", "tinysam.pth", "--sd15", "sd15"]
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "preset paper-fundus (4 clients, held out: domain4)" in done.stdout
    return root


def test_preset_sets_the_papers_values_and_keeps_the_old_file(preset: Path) -> None:
    params = load_params(preset / "params.yaml", check_paths=True)
    assert (params.data.image_size, params.data.mask_size, params.data.holdout) == (1024, 256, "domain4")
    assert params.federated.rounds == 100 and params.federated.local.lr == 1e-4 and params.federated.local.epochs == 1
    assert params.federated.loss.pos_weight == 2.0
    assert params.federated.methods["fedtinysam"].model == "tinysam" and params.federated.methods["fedsam"].model == "sam_vit_b"
    assert params.server_sam.model == "sam_vit_b" and params.distill.batch_size == 4 and params.distill.lam == 0.5
    assert params.distill.rounds == 100 and params.backbone.kind == "sd15"
    assert (preset / "params.yaml.bak").read_text() == "seed: 1\n# the user's own file\n"


def test_every_checkpoint_path_loads_through_the_stage_code(preset: Path) -> None:
    params = load_params(preset / "params.yaml", check_paths=True)
    official = torch.load(preset / "sam_vit_b_01ec64.pth", weights_only=True)
    for method in ("fedsam", "fedtinysam"):
        spec = params.federated.methods[method]
        spec = spec.model_copy(update={"checkpoint": preset / spec.checkpoint})
        model = model_factory(params, spec, torch.device("cpu"))()
        assert model.input_size == 1024
        if method == "fedsam":
            key = "image_encoder.blocks.0.attn.qkv.weight"
            assert torch.equal(model.sam.state_dict()[key], official[key])
        del model
    server = params.server_sam
    model = build_model(server.model, num_classes=2, output_size=256, checkpoint=preset / server.checkpoint)
    assert torch.equal(model.sam.state_dict()["mask_decoder.iou_token.weight"], official["mask_decoder.iou_token.weight"])


def test_backbone_and_data_paths_resolve(preset: Path, tmp_path: Path) -> None:
    params = load_params(preset / "params.yaml", check_paths=True)
    manifest = prepare_backbone(params, tmp_path / "artifacts", root=preset, progress=False)
    assert manifest["kind"] == "sd15" and manifest["parameters"]["controlnet"] > 0
    raw = yaml.safe_load((preset / "params.yaml").read_text())
    raw["data"]["image_size"], raw["data"]["mask_size"] = 64, 32  # the layout matters here, not the size
    from dsfed.config import parse_params

    small = parse_params(raw, root=preset, check_paths=True)
    path = build_client_store(small, "domain1", store_path(tmp_path / "artifacts", "domain1"), root=preset, progress=False)
    store = ClientStore(path)
    assert len(store) == 6 and len(store.split("test")) == 2
    assert set(np.unique(store.masks[:])) <= {0, 1}
