"""SAM-Fed's task as a :class:`~dsfed.config.Params` of its own, and where its stages read and write.

``samfed_view(params)`` gives the SAM-Fed section's data, prepare and clients as a whole Params, so the
pipeline's prepare and evaluate code run on it unchanged under ``artifacts/samfed/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from dsfed.errors import DsfedError
from dsfed.samfed.settings import PUBLIC

if TYPE_CHECKING:
    from dsfed.config import Params

__all__ = ["init_folder", "public_store", "samfed_root", "samfed_view", "teacher_folder", "variant_folder"]


def samfed_root(artifacts: str | Path) -> Path:
    """``artifacts/samfed``: the SAM-Fed task's artifacts root (client stores under ``clients/``)."""
    return Path(artifacts) / "samfed"


def public_store(artifacts: str | Path) -> Path:
    """The server's public labelled store."""
    return samfed_root(artifacts) / PUBLIC / "data.zarr"


def teacher_folder(artifacts: str | Path) -> Path:
    return samfed_root(artifacts) / "teacher"


def init_folder(artifacts: str | Path, architecture: str) -> Path:
    return samfed_root(artifacts) / "init" / architecture


def variant_folder(artifacts: str | Path, variant: str) -> Path:
    return samfed_root(artifacts) / "variants" / variant


def samfed_view(params: Params, with_public: bool = False) -> Params:
    """The SAM-Fed task as Params: its data, prepare and clients (``with_public``: plus the public set as a
    client named ``public``, for building its store), the pipeline's seed and evaluate settings."""
    from dsfed.config import Params

    cfg = params.samfed
    if not cfg.clients:
        raise DsfedError("samfed.clients: the SAM-Fed task declares no clients")
    clients = dict(cfg.clients)
    if with_public:
        if not cfg.public:
            raise DsfedError("samfed.public: the SAM-Fed task declares no public set")
        clients[PUBLIC] = cfg.public_set
    return Params(seed=params.seed, data=cfg.data, prepare=cfg.prepare, evaluate=params.evaluate, clients=clients)
