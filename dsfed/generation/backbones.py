"""Resolve the configured backbone (embedded, retrained, or SD 1.5) into a manifest (the ``backbone`` stage).

The stage writes ``artifacts/backbone/manifest.json``; every later stage loads the backbone and the
generic ControlNet through :func:`load_backbone` / :func:`generic_controlnet`, so they never look at
``params.yaml``'s backbone section themselves and DVC reruns them exactly when the manifest changes.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import ControlNetModel

from dsfed.config import Params
from dsfed.errors import DsfedError
from dsfed.generation.backbone import BACKBONE_CONFIG, BACKBONE_WEIGHTS, Backbone, EmbeddedBackbone, embedded_folder
from dsfed.generation.controlnet import build_controlnet, load_controlnet
from dsfed.generation.notes import controlnet_class_note, controlnet_tasks
from dsfed.generation.settings import BackboneConfig
from dsfed.io import atomic_path, sha256_file

__all__ = [
    "BACKBONE_KINDS",
    "MANIFEST",
    "BackboneManifest",
    "check_classes",
    "generic_controlnet",
    "load_backbone",
    "prepare_backbone",
    "read_manifest",
]

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class BackboneManifest:
    """What the ``backbone`` stage resolved (``manifest.json``).

    ``weights``: the embedded backbone folder, or the SD 1.5 folder; ``controlnet``: the generic
    ControlNet (file or diffusers folder), or None for ``ControlNetModel.from_unet``; ``tasks``: the
    public tasks (task -> classes) the generic ControlNet was pre-trained on (None: not recorded).
    """

    kind: str
    weights: str
    controlnet: str | None
    prompt: str
    tasks: dict[str, list[str]] | None
    sha256: dict[str, str]
    parameters: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "weights": self.weights, "controlnet": self.controlnet, "prompt": self.prompt,
                "tasks": self.tasks, "sha256": self.sha256, "parameters": self.parameters}


def _hash_files(paths: list[Path]) -> dict[str, str]:
    return {str(p): sha256_file(p) for p in paths if p.is_file()}


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _resolve(path: Path | None, root: Path) -> Path | None:
    if path is None:
        return None
    return path if path.is_absolute() else root / path


# --------------------------------------------------------------------------------------------------
# Loaders: kind -> (manifest -> Backbone)
# --------------------------------------------------------------------------------------------------


def _load_embedded(manifest: BackboneManifest, device: str | torch.device) -> Backbone:
    backbone = EmbeddedBackbone.load(manifest.weights).to(device)
    backbone.use_prompt(manifest.prompt)  # a prompt it did not learn: the generic row, with a warning
    return backbone


def _load_sd15(manifest: BackboneManifest, device: str | torch.device) -> Backbone:
    from dsfed.generation.stable_diffusion import StableDiffusionBackbone

    return StableDiffusionBackbone.from_pretrained(manifest.weights, prompt=manifest.prompt, device=device)


BACKBONE_KINDS: dict[str, Callable[[BackboneManifest, str | torch.device], Backbone]] = {
    "embedded": _load_embedded,
    "pretrain": _load_embedded,
    "sd15": _load_sd15,
}


def read_manifest(folder: str | Path) -> BackboneManifest:
    """The manifest in the ``backbone`` stage's ``folder``; a clear error when the stage has not run."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise DsfedError(f"{path}: no backbone manifest (run `dvc repro backbone` first)")
    try:
        raw = json.loads(path.read_text())
        return BackboneManifest(**{k: raw[k] for k in BackboneManifest.__dataclass_fields__})
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise DsfedError(f"{path}: unreadable backbone manifest ({exc}); rerun `dvc repro backbone`") from exc


def load_backbone(folder: str | Path, device: str | torch.device = "cpu") -> tuple[Backbone, BackboneManifest]:
    """The frozen backbone the ``backbone`` stage resolved into ``folder``, in eval mode on ``device``."""
    manifest = read_manifest(folder)
    if manifest.kind not in BACKBONE_KINDS:
        raise DsfedError(f"{Path(folder) / MANIFEST}: unknown backbone kind {manifest.kind!r}")
    backbone = BACKBONE_KINDS[manifest.kind](manifest, device)
    module = backbone if isinstance(backbone, torch.nn.Module) else backbone.unet
    module.eval().requires_grad_(False)
    return backbone, manifest


def generic_controlnet(backbone: Backbone, manifest: BackboneManifest) -> ControlNetModel:
    """The ControlNet every client starts from: the manifest's generic one (a safetensors of this project's
    layout, or an official diffusers folder), or one built from the backbone's UNet."""
    if manifest.controlnet is None:
        return build_controlnet(backbone)
    return load_controlnet(backbone, Path(manifest.controlnet))


def check_classes(manifest: BackboneManifest, classes: list[str], where: str) -> None:
    """Warn (naming ``where``) when the generic ControlNet never saw masks of as many classes as ``classes``
    (the condition image draws any number: :func:`dsfed.generation.condition.render_condition`)."""
    note = controlnet_class_note(manifest.tasks, classes, manifest.controlnet)
    if note is not None:
        log.warning("%s: %s", where, note)


# --------------------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------------------


def prepare_backbone(params: Params, out: str | Path, root: str | Path = ".", progress: bool = True) -> dict[str, Any]:
    """Resolve ``params.backbone`` into ``out/manifest.json`` (atomically; the stage's folder is ``artifacts/backbone``).

    Loads the backbone and the generic ControlNet once, so a broken path or a ControlNet that does not fit
    fails here, naming the file, before any client trains. ``kind: pretrain`` trains both into
    ``out/pretrained`` first.

    Returns:
        the manifest as written (with parameter counts and the backbone's sizes).
    """
    cfg: BackboneConfig = params.backbone
    root, out = Path(root), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    weights = _resolve(cfg.path, root)
    controlnet = _resolve(cfg.controlnet, root)
    if cfg.kind == "pretrain":
        from dsfed.generation.pretrain import CONTROLNET_WEIGHTS, pretrain
        from dsfed.runtime import pick_device

        spec = cfg.pretrain.spec
        target = out / "pretrained"
        pretrain(target, corpus_n=cfg.pretrain.corpus_n, backbone_spec=spec.backbone, backbone_train=spec.backbone_train,
                 controlnet_train=spec.controlnet_train, sampler=spec.sampler, device=str(pick_device(cfg.device)),
                 tasks=cfg.pretrain.tasks, init=_resolve(cfg.pretrain.init, root),
                 grid_n=spec.grid_n, eval_n=spec.eval_n, overwrite=True, progress=progress)
        weights, controlnet = target / "backbone", target / CONTROLNET_WEIGHTS
    assert weights is not None  # the config requires a path for embedded and sd15
    if not weights.exists():
        raise DsfedError(f"backbone.path: {weights} does not exist")
    if cfg.kind in ("embedded", "pretrain"):
        weights = embedded_folder(weights)
        files = [weights / BACKBONE_CONFIG, weights / BACKBONE_WEIGHTS]
    else:  # SD 1.5: configs and tokenizer hashed; weights recorded by size (a snapshot can hold many GB of variants)
        files = sorted(p for p in weights.rglob("*") if p.is_file() and p.suffix in (".json", ".txt"))
    if controlnet is not None:
        if not controlnet.exists():
            raise DsfedError(f"backbone.controlnet: {controlnet} does not exist")
        files += [controlnet] if controlnet.is_file() else sorted(p for p in controlnet.iterdir() if p.is_file())

    manifest = BackboneManifest(
        kind=cfg.kind, weights=str(weights), controlnet=None if controlnet is None else str(controlnet),
        prompt=cfg.prompt, tasks=controlnet_tasks(controlnet), sha256=_hash_files(files), parameters={},
    )
    t0 = time.perf_counter()
    backbone = BACKBONE_KINDS[cfg.kind](manifest, "cpu")
    generic = generic_controlnet(backbone, manifest)
    load_s = time.perf_counter() - t0
    parameters = {"unet": _count(backbone.unet), "controlnet": _count(generic)}
    manifest = BackboneManifest(**{**manifest.__dict__, "parameters": parameters})
    # only what the backbone *is* (no timings, command or code hash): the manifest's bytes change exactly
    # when the backbone does, so DVC reruns the clients' ControlNets only then
    summary = {**manifest.to_json(), "sample_size": backbone.sample_size, "condition_size": backbone.condition_size,
               "in_channels": backbone.in_channels, "pixel_space": backbone.pixel_space}
    with atomic_path(out / MANIFEST, overwrite=True) as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    log.info("backbone %s from %s (UNet %.2f M, ControlNet %.2f M parameters; loaded in %.1f s)", cfg.kind, weights,
             parameters["unet"] / 1e6, parameters["controlnet"] / 1e6, load_s)
    return summary

