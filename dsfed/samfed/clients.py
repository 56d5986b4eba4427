"""SAM-Fed's clients, built the same way in the server's process (in-process engine) and at a hospital's node.

A client needs its own unlabelled store, the public store (public images: clients distil on them), its
architecture's model and, for the variants that use it, the base SAM the delivered teacher adapter goes on.
:func:`samfed_setup` is what a node is sent to build one (``NODE_BUILDERS["samfed"]``): the params, the
variant, the public store's path on the server, and the sha256 of every checkpoint a client loads, which
the node's copies must match.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from dsfed.federated.engines.remote import setup_task
from dsfed.io import sha256_file

if TYPE_CHECKING:
    from dsfed.config import Params
    from dsfed.federated.engines.wire import SetupTask
    from dsfed.samfed.client import SamFedClient
    from dsfed.samfed.settings import SamFedConfig

__all__ = ["build_samfed_client", "client_checkpoints", "samfed_setup"]

SETUP_KIND = "samfed"


def _training(cfg: SamFedConfig, variant: str) -> Any:
    from dsfed.samfed.client import SamFedTraining

    spec = cfg.variants[variant]
    arch = cfg.architectures[spec.model]
    return SamFedTraining(
        pseudo=spec.pseudo, global_kd=spec.global_kd, public_pass=spec.public_pass, agreement=cfg.agreement,
        threshold=spec.threshold or cfg.agreement.threshold, lam_sam=cfg.distill.lam_sam, lam_kd=cfg.distill.lam_kd,
        temperature=cfg.distill.temperature, epochs=cfg.local["epochs"], batch_size=cfg.local["batch_size"], lr=arch.lr,
        loss=cfg.loss, augment=cfg.augment,
    )


def client_checkpoints(cfg: SamFedConfig, variant: str, client: str) -> dict[str, Path]:
    """The checkpoints ``client`` loads in ``variant``: its architecture's and, with a teacher, the base SAM's."""
    spec = cfg.variants[variant]
    out: dict[str, Path] = {}
    arch = cfg.architectures[cfg.architecture_of(variant, client)]
    if arch.checkpoint is not None:
        out["architecture"] = Path(arch.checkpoint)
    if spec.pseudo in ("agreement", "sam") and cfg.teacher.checkpoint is not None:
        out["teacher"] = Path(cfg.teacher.checkpoint)
    return out


def with_checkpoints(cfg: SamFedConfig, variant: str, client: str, paths: dict[str, Path]) -> SamFedConfig:
    """``cfg`` with ``client``'s checkpoints at ``paths`` (the names of :func:`client_checkpoints`)."""
    if "architecture" in paths:
        name = cfg.architecture_of(variant, client)
        arch = cfg.architectures[name].model_copy(update={"checkpoint": paths["architecture"]})
        cfg = cfg.model_copy(update={"architectures": {**cfg.architectures, name: arch}})
    if "teacher" in paths:
        cfg = cfg.model_copy(update={"teacher": cfg.teacher.model_copy(update={"checkpoint": paths["teacher"]})})
    return cfg


def build_samfed_client(cfg: SamFedConfig, seed: int, variant: str, client: str, store: Path, public: Path, cache: Path,
                        device: torch.device) -> SamFedClient:
    """``client``'s SAM-Fed client for ``variant`` over its own ``store``."""
    from dsfed.samfed.hetero import HeteroClient
    from dsfed.samfed.server import build_architecture, teacher_factory

    spec = cfg.variants[variant]
    arch = cfg.architectures[cfg.architecture_of(variant, client)]
    teacher = teacher_factory(cfg, device) if spec.pseudo in ("agreement", "sam") else None
    training = _training(cfg, variant)

    def factory() -> Any:
        return build_architecture(cfg, arch, seed, device)

    if spec.aggregation == "rcrf":
        return HeteroClient(client, store, public, factory, teacher, training, cache, seed, device, rf_epochs=spec.rf_epochs)
    from dsfed.samfed.client import SamFedClient

    return SamFedClient(client, store, public, factory, teacher, training, cache, seed, device)


def samfed_setup(params: Params, variant: str, public: Path) -> SetupTask:
    """What every node builds for ``samfed@<variant>``: the params, the variant, the server's public store path
    and the sha256 of each checkpoint a client loads (client -> name -> digest)."""
    cfg = params.samfed
    digests = {client: {name: sha256_file(path) for name, path in client_checkpoints(cfg, variant, client).items() if path.is_file()}
               for client in cfg.clients}
    return setup_task(SETUP_KIND, {"params": params.model_dump(mode="json"), "variant": variant, "public": str(Path(public).resolve()),
                                   "checkpoint_sha256": digests})
