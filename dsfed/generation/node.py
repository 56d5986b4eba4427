"""DSFedMed's client side at a hospital's node: ``controlnet@<client>`` and ``quality@<client>`` through an engine.

The server sends a setup of kind ``controlnet`` (the run's params and the backbone's manifest) and one fit
task; the node trains the client's ControlNet on its own store with the same code as in process
(:func:`dsfed.generation.client.train_client_generator`) into a folder of its own, and replies with that
upload folder's files: the ControlNet weights, the training masks (never an image), the ledger of the uploads
and the client's summary and loss curve (numbers). The server writes the files it received into
``artifacts/generators/<client>/``, byte for byte what the in-process stage writes. For the quality audit the
server delivers the client's synthetic set (its store's files) and asks for a second fit (``step: audit``):
the node scores it against its own data and sends back the audit's numbers and ledger; the grid of its real
images stays at the node.

A folder travels as a safetensors payload of uint8 tensors, one per file, named by its path in the folder
(:func:`pack_folder`, :func:`unpack_folder`): the wire's only format stays safetensors.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from dsfed.federated.errors import FederatedError
from dsfed.federated.protocol import ClientInfo, FitResult, Weights
from dsfed.io import atomic_path, safe_name, sha256_file

if TYPE_CHECKING:
    from dsfed.config import Params
    from dsfed.data.store import ClientStore
    from dsfed.federated.engines.node import NodeConfig

__all__ = ["SYNTHETIC_SET", "GeneratorClient", "build_generator_client", "generator_settings", "local_manifest", "pack_folder", "unpack_folder"]

log = logging.getLogger(__name__)

SYNTHETIC_SET = "synthetic_set"
"""The delivery of a client's synthetic set (its store's files) for the quality audit at the client."""


def pack_folder(folder: Path) -> dict[str, torch.Tensor]:
    """Every file under ``folder`` as a 1-D uint8 tensor of its bytes, keyed by its POSIX path in the folder."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {p.relative_to(folder).as_posix(): torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8) if p.stat().st_size
            else torch.zeros(0, dtype=torch.uint8) for p in files}


def unpack_folder(files: Weights, out: Path) -> None:
    """Write :func:`pack_folder`'s tensors as the folder ``out`` (atomically; replaces what was there). A path
    that would leave ``out`` (absolute, or with ``..``) is refused before anything is written."""
    for name in files:
        parts = Path(name).parts
        if Path(name).is_absolute() or ".." in parts or not parts:
            raise FederatedError(f"an upload names the file {name!r}, outside its folder")
        if files[name].dtype != torch.uint8 or files[name].dim() != 1:
            raise FederatedError(f"an upload's file {name!r} is not a byte string")
    with atomic_path(out, overwrite=True) as tmp:
        tmp.mkdir(parents=True)
        for name, data in files.items():
            path = tmp / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data.numpy().tobytes())


def generator_settings(params_json: dict[str, Any], backbone_dir: Path, root: Path) -> dict[str, Any]:
    """The setup a node builds a :class:`GeneratorClient` from: the params, the backbone's manifest as the
    server's ``backbone`` stage wrote it (its paths relative to the server's project ``root``, its files'
    sha256) and that root. The node holds the backbone's files itself (:func:`local_manifest`)."""
    manifest = json.loads((Path(backbone_dir) / "manifest.json").read_text())
    return {"params": params_json, "manifest": manifest, "root": str(Path(root).resolve())}


def local_manifest(manifest: dict[str, Any], root: Path, pretrained_dir: Path, node: NodeConfig) -> dict[str, Any]:
    """``manifest`` with every file path where this node holds it: under ``node.pretrained`` (its copy of the
    server's ``federated.pretrained_dir``) when the node was given one, else the server's path (one machine).
    Each file must have the manifest's sha256; one line names the first that is missing or differs."""
    base = pretrained_dir if pretrained_dir.is_absolute() else root / pretrained_dir

    def where(path: str) -> str:
        server = Path(path) if Path(path).is_absolute() else root / path
        if node.pretrained is not None:
            try:
                return str(node.pretrained / server.relative_to(base))
            except ValueError:
                raise FederatedError(f"client {node.client}: the backbone file {path} is outside the server's federated.pretrained_dir "
                                     f"({pretrained_dir}): copy it to this node's folder at the same path instead") from None
        return str(server)

    local = dict(manifest)
    local["weights"] = where(str(manifest["weights"]))
    if manifest.get("controlnet"):
        local["controlnet"] = where(str(manifest["controlnet"]))
    local["sha256"] = {}
    for path, digest in sorted(dict(manifest.get("sha256", {})).items()):
        mine = where(path)
        if not Path(mine).is_file():
            raise FederatedError(f"client {node.client}: the backbone file {mine} not found; copy the server's "
                                 f"federated.pretrained_dir to this node and pass it as `dsfed node start --pretrained DIR`")
        if sha256_file(mine) != digest:
            raise FederatedError(f"client {node.client}: the backbone file {mine} differs from the server's (sha256 {digest[:12]}...)")
        local["sha256"][mine] = digest
    return local


class GeneratorClient:
    """:class:`~dsfed.federated.protocol.ClientAlgo` whose one fit trains the client's ControlNet.

    Args:
        name: client name.
        store: its own client store.
        params: the run's params (``controlnet``, ``seed``, the client list).
        backbone_dir: a folder holding the backbone's ``manifest.json`` (its files where the manifest says).
        work: the node's own folder for the upload it builds.
        recorded_manifest: the manifest the upload's provenance records (the server's; None: the loaded one).
    """

    def __init__(self, name: str, store: str | Path, params: Params, backbone_dir: Path, work: Path,
                 recorded_manifest: dict[str, Any] | None = None) -> None:
        self.name = name
        self._store_path = Path(store)
        self._store: ClientStore | None = None
        self.params = params
        self.backbone_dir = backbone_dir
        self.work = work
        self.seed = params.seed
        self.recorded_manifest = recorded_manifest

    @property
    def store(self) -> ClientStore:
        if self._store is None:
            from dsfed.data.store import ClientStore

            self._store = ClientStore(self._store_path)
        return self._store

    def describe(self) -> ClientInfo:
        held_out = self.store.is_holdout
        samples = {split: 0 if held_out and split != "test" else len(self.store.split(split)) for split in ("train", "val", "test")}
        return ClientInfo(samples, str(self.store.attrs.get("fingerprint")))

    # ----------------------------------------------------------------------- the synthetic set, for the audit
    def holds(self) -> dict[str, str]:
        """The synthetic set's digest once it was delivered (read from the node's disk)."""
        note = self.work / "synthetic.json"
        return {SYNTHETIC_SET: str(json.loads(note.read_text())["sha256"])} if note.is_file() and (self.work / "synthetic").is_dir() else {}

    def receive(self, what: str, payload: bytes, digest: str) -> dict[str, float]:
        """The server's synthetic set of this client (its store's files) arrives: kept for the audit."""
        import hashlib

        from dsfed.federated.engines.base import ClientFailure
        from dsfed.federated.serialize import from_bytes

        if what != SYNTHETIC_SET:
            raise ClientFailure(f"client {self.name}: cannot use a delivery of {what!r}")
        if hashlib.sha256(payload).hexdigest() != digest:
            raise ClientFailure(f"client {self.name}: the delivery of {what} arrived damaged (sha256 differs)")
        files = from_bytes(payload)
        unpack_folder(files, self.work / "synthetic")
        with atomic_path(self.work / "synthetic.json", overwrite=True) as tmp:
            tmp.write_text(json.dumps({"sha256": digest, "files": len(files)}) + "\n")
        return {"files": float(len(files))}

    def train(self, weights: Weights, round: int, config: dict[str, Any]) -> FitResult:
        """``config["step"]``: ``controlnet`` (default) trains the ControlNet on this client's training pairs;
        ``audit`` scores the delivered synthetic set against the client's real data. The result is the output
        folder's files (the audit's grid of real images stays here: its place is filled with a blank)."""
        if config.get("step", "controlnet") == "audit":
            return self._audit()
        from dsfed.generation.client import train_client_generator

        upload = self.work / "upload"
        summary = train_client_generator(self.params, self.name, self._store_path, self.backbone_dir, upload, progress=False,
                                         recorded_manifest=self.recorded_manifest)
        files = pack_folder(upload)
        log.info("client %s: uploading %d files (%s)", self.name, len(files), ", ".join(sorted(files)[:4]))
        return FitResult(files, int(summary.get("n_train", 0)), {"seconds": float(summary.get("seconds", 0.0))})

    def _audit(self) -> FitResult:
        from dsfed.generation.audit import GRID, audit_client
        from dsfed.generation.grid import save_grid

        if not self.holds():
            raise FederatedError(f"client {self.name}: asked to audit a synthetic set it was not sent")
        out = self.work / "quality"
        quality = audit_client(self.params, self.name, self._store_path, self.work / "synthetic", out, progress=False)
        files = {k: v for k, v in pack_folder(out).items() if k != GRID}
        blank = self.work / "blank-grid.png"
        save_grid(blank, [np.full((1, 3, 8, 8), 255, np.uint8)])
        files[GRID] = torch.frombuffer(bytearray(blank.read_bytes()), dtype=torch.uint8)
        log.info("client %s: audit done; its grid of real images stays at %s", self.name, out / GRID)
        return FitResult(files, int(quality.get("n_synthetic", 0)), {})

    def evaluate(self, weights: Weights, split: str) -> dict[str, float]:
        raise FederatedError(f"client {self.name} trains its ControlNet here: the server must not ask it to evaluate")

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def build_generator_client(node: NodeConfig, settings: dict[str, Any]) -> GeneratorClient:
    """The node's :class:`GeneratorClient` (setup kind ``controlnet``, settings from :func:`generator_settings`):
    the backbone loaded from the node's own files (:func:`local_manifest`), the server's manifest recorded in
    the ControlNet's provenance (so the upload's bytes do not depend on where a node keeps its files)."""
    from dsfed.config import parse_params

    params = parse_params(settings["params"], source="the server's setup")
    if node.client not in params.clients:
        raise FederatedError(f"client {node.client} is not one of the server's clients ({', '.join(params.clients)})")
    manifest = dict(settings["manifest"])
    local = local_manifest(manifest, Path(str(settings["root"])), Path(params.federated.pretrained_dir), node)
    folder = node.state / "generator" / safe_name(node.client)   # beside its state folder, which keeps one run only
    backbone = folder / "backbone"
    backbone.mkdir(parents=True, exist_ok=True)
    with atomic_path(backbone / "manifest.json", overwrite=True) as tmp:
        tmp.write_text(json.dumps(local, indent=2, sort_keys=True) + "\n")
    from dsfed.generation.backbones import BackboneManifest

    recorded = {k: manifest[k] for k in BackboneManifest.__dataclass_fields__}   # what the in-process stage records
    return GeneratorClient(node.client, node.store, params, backbone, folder, recorded_manifest=recorded)
