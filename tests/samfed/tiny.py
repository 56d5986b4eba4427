"""A tiny SAM-Fed task for tests: params, stores, teacher and init in a folder; also a child process entry point
(``python -m tests.samfed.tiny ROOT VARIANT``) that runs one variant, pausing in round ``$SAMFED_PAUSE_ROUND``."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from dsfed.config import Params, parse_params

REPO = Path(__file__).resolve().parents[2]
PAUSE_ROUND, PAUSE_MARKER = "SAMFED_PAUSE_ROUND", "SAMFED_PAUSE_MARKER"


def _skin(site: str, n: int, seed: int = 0) -> dict[str, Any]:
    return {"kind": "phantom", "task": "skin", "view": "full", "path": "samfed_sites.yaml", "site": site, "n": n, "seed": seed}


def tiny_params(root: Path, rounds: int = 3) -> Params:
    """Two unlabelled clients (8 images each at 32 px), a 12-image public set, a U-Net, the demo SAM teacher."""
    if not (root / "samfed_sites.yaml").exists():
        root.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "data/phantom/samfed_sites.yaml", root / "samfed_sites.yaml")
    raw = {
        "seed": 0,
        "clients": {"x": {"source": _skin("samfed_a", 4)}},   # the DSFedMed side is not used here
        "samfed": {
            "data": {"classes": ["lesion"], "image_size": 32, "mask_size": 16},
            "prepare": {"split": {"val": 0.25, "test": 0.25}},
            "public": {"pub": {"source": _skin("public", 12, seed=3)}},
            "clients": {"c1": {"labels": "test_only", "source": _skin("samfed_a", 8, 1)},
                        "c2": {"labels": "test_only", "source": _skin("samfed_b", 8, 1)}},
            "architectures": {"unet": {"model": "unet", "lr": 1e-3}, "nnunet": {"model": "nnunet", "lr": 1e-3}},
            "teacher": {"model": "sam_demo", "checkpoint": str(REPO / "data/pretrained/embedded/sam_demo.safetensors"), "input_size": 64,
                        "epochs": 1, "batch_size": 4},
            "init": {"epochs": 1, "batch_size": 4},
            "rounds": rounds,
            "min_clients": 2,
            "variants": {"samfed": {"model": "unet"}, "supervised": {"model": "unet", "pseudo": "labels", "global_kd": False},
                         "hetero": {"model": "unet", "clients": {"c2": "nnunet"}, "aggregation": "rcrf", "global_kd": False}},
        },
    }
    return parse_params(raw, root=root)


def build_task(root: Path, rounds: int = 3) -> Params:
    """Stores, teacher and init under ``root/artifacts`` (idempotent)."""
    from dsfed.stages import samfed as stages

    params = tiny_params(root, rounds)
    art = root / "artifacts"
    stages.run_samfed_public(params, art, root=root)
    for client in params.samfed.clients:
        stages.run_samfed_prepare(params, client, art, root=root)
    if not (art / "samfed/teacher/adapter.safetensors").exists():
        stages.run_samfed_teacher(params, art)
    for arch in params.samfed.architectures:
        if not (art / f"samfed/init/{arch}/model.safetensors").exists():
            stages.run_samfed_init(params, arch, art)
    return params


def main(root: str, variant: str, out: str) -> None:
    import torch

    from dsfed.samfed.client import SamFedClient
    from dsfed.samfed.run import run_variant

    torch.set_num_threads(1)
    pause = int(os.environ.get(PAUSE_ROUND, "0"))
    if pause:
        from dsfed.samfed.hetero import HeteroClient

        def pausing(original: Any) -> Any:
            def train(self: SamFedClient, weights: Any, round: int, config: dict[str, Any]) -> Any:
                if round == pause:
                    Path(os.environ[PAUSE_MARKER]).write_text("paused")
                    time.sleep(600)
                return original(self, weights, round, config)
            return train

        for cls in (SamFedClient, HeteroClient):
            cls.train = pausing(cls.train)  # type: ignore[method-assign]
    params = tiny_params(Path(root))
    run_variant(params, variant, Path(root) / "artifacts", Path(out), progress=False)


if __name__ == "__main__":
    main(*sys.argv[1:4])
