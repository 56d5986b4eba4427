"""Deployment helpers: certificates and node keys, and the Flower command lines of the server and a node.

``dsfed certs create``, ``dsfed server start``, ``dsfed node start`` and ``dsfed node register`` are thin
wrappers over these (docs/deploy.md). Every address binds to 127.0.0.1 unless the caller names another host.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dsfed.errors import DsfedError
from dsfed.federated.flower.launch import flower_bin
from dsfed.io import safe_name

log = logging.getLogger(__name__)

__all__ = ["Certificates", "create_certificates", "node_command", "stop_orphan_serverapps", "superlink_command"]


@dataclass(frozen=True)
class Certificates:
    """The files of a certificate folder (``dsfed certs create``)."""

    folder: Path

    @property
    def ca(self) -> Path:
        return self.folder / "ca.crt"

    @property
    def server_cert(self) -> Path:
        return self.folder / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.folder / "server.key"

    def node_key(self, client: str) -> Path:
        """The node's private key (OpenSSH format); ``.pub`` beside it is what the server registers."""
        return self.folder / f"node_{safe_name(client)}"

    def require(self, *paths: Path) -> None:
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise DsfedError(f"{missing[0]}: not found (create the folder with `dsfed certs create {self.folder}`)")


def create_certificates(folder: Path, nodes: Sequence[str], hosts: Sequence[str] = ("127.0.0.1", "localhost"),
                        days: int = 365) -> Certificates:
    """A CA, the SuperLink's certificate for ``hosts`` signed by it, and one EC key pair per node.

    Existing files are kept (a node key is its identity on the server); only missing ones are written.
    Private keys are written with mode 0600.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    certs = Certificates(folder)
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)

    def write_private(path: Path, data: bytes) -> None:
        path.write_bytes(data)
        path.chmod(0o600)

    def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())

    ca_key_path = folder / "ca.key"
    if not certs.ca.is_file():
        ca_key = ec.generate_private_key(ec.SECP384R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dsfed federation CA")])
        ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(ca_key.public_key())
              .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
              .not_valid_after(now + dt.timedelta(days=days))
              .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
              .sign(ca_key, hashes.SHA256()))
        write_private(ca_key_path, pem_key(ca_key))
        certs.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    if not certs.server_cert.is_file():
        ca_key_loaded = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
        if not isinstance(ca_key_loaded, ec.EllipticCurvePrivateKey):
            raise DsfedError(f"{ca_key_path}: not an EC key")
        ca_cert = x509.load_pem_x509_certificate(certs.ca.read_bytes())
        key = ec.generate_private_key(ec.SECP384R1())
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
                .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
                .add_extension(x509.SubjectAlternativeName(names), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .sign(ca_key_loaded, hashes.SHA256()))
        write_private(certs.server_key, pem_key(key))
        certs.server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    for client in nodes:
        path = certs.node_key(client)
        if path.is_file():
            continue
        key = ec.generate_private_key(ec.SECP384R1())
        write_private(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()))
        path.with_name(path.name + ".pub").write_bytes(
            key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH) + b"\n")
    return certs


def superlink_command(state: Path, host: str = "127.0.0.1", fleet_port: int = 9092, control_port: int = 9093,
                      serverappio_port: int = 9091, certs: Certificates | None = None, node_auth: bool = False) -> list[str]:
    """``flower-superlink``: Fleet (nodes) and Control (``flwr run``) APIs on ``host``; the ServerAppIo API
    (the ServerApp's own link) on 127.0.0.1 always; its state (registered nodes, runs) in ``state``."""
    if node_auth and certs is None:
        raise DsfedError("node authentication needs TLS: pass --certs (a folder from `dsfed certs create`)")
    if certs is None and host not in ("127.0.0.1", "localhost", "::1"):
        raise DsfedError(f"--host {host}: plaintext is for 127.0.0.1 only; pass --certs for TLS")
    state.mkdir(parents=True, exist_ok=True)
    cmd = [flower_bin("flower-superlink"), "--fleet-api-address", f"{host}:{fleet_port}", "--control-api-address", f"{host}:{control_port}",
           "--serverappio-api-address", f"127.0.0.1:{serverappio_port}", "--database", str(state / "superlink.db"),
           "--disable-runtime-dependency-installation"]
    if certs is None:
        return [*cmd, "--insecure"]
    certs.require(certs.ca, certs.server_cert, certs.server_key)
    cmd += ["--ssl-ca-certfile", str(certs.ca), "--ssl-certfile", str(certs.server_cert), "--ssl-keyfile", str(certs.server_key)]
    return [*cmd, "--enable-supernode-auth"] if node_auth else cmd


def stop_orphan_serverapps(serverappio_port: int, timeout_s: float = 10.0) -> list[int]:
    """Stop ServerApp processes of an earlier SuperLink on this ServerAppIo port; returns their PIDs.

    A SuperLink killed hard (a crash, SIGKILL) leaves its ``flwr-serverapp`` child running; when a new SuperLink
    comes up on the same port and database, the orphan reconnects and carries on with its run's rounds from
    memory, beside the resumed run (seen on a loaded machine). A restarted server must not have two.
    """
    import psutil

    address = f"127.0.0.1:{serverappio_port}"
    orphans = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if any(part.endswith("flwr-serverapp") for part in cmdline) and address in cmdline:
            orphans.append(proc)
    for proc in orphans:
        log.warning("stopping ServerApp process %d left by an earlier SuperLink on %s", proc.pid, address)
        proc.terminate()
    _, alive = psutil.wait_procs(orphans, timeout=timeout_s)
    for proc in alive:
        proc.kill()
    return [p.pid for p in orphans]


def node_command(client: str, data: Path, state: Path, superlink: str = "127.0.0.1:9092", clientappio_port: int = 9094,
                 root_certificates: Path | None = None, auth_key: Path | None = None, device: str = "auto",
                 pretrained: Path | None = None, public: Path | None = None) -> list[str]:
    """``flower-supernode`` for one hospital: its client name, its own store and state folder in its node
    config (what the ClientApp reads), TLS with the federation's CA, and its key when nodes authenticate.
    ``pretrained``: its copy of the server's ``federated.pretrained_dir``; ``public``: its copy of SAM-Fed's
    public store (default for both: the server's path)."""
    from dsfed.data.store import ClientStore

    if not (data / "zarr.json").is_file() and not (data / ".zgroup").is_file():
        raise DsfedError(f"--data {data}: not a client store (a data.zarr folder that `dsfed`'s prepare stage writes)")
    store = ClientStore(data)
    if store.client and store.client != client:
        raise DsfedError(f"--data {data}: this store is client {store.client}'s, not {client}'s")
    if root_certificates is None and superlink.rsplit(":", 1)[0] not in ("127.0.0.1", "localhost", "[::1]"):
        raise DsfedError(f"--superlink {superlink}: plaintext is for 127.0.0.1 only; pass --root-certificates")
    config = {"client": client, "data": str(data.resolve()), "state": str(state.resolve()), "device": device}
    if pretrained is not None:
        if not pretrained.is_dir():
            raise DsfedError(f"--pretrained {pretrained}: not a folder (this node's copy of the server's federated.pretrained_dir)")
        config["pretrained"] = str(pretrained.resolve())
    if public is not None:
        if not public.is_dir():
            raise DsfedError(f"--public {public}: not a folder (this node's copy of SAM-Fed's public store, a data.zarr folder)")
        config["public"] = str(public.resolve())
    cmd = [flower_bin("flower-supernode"), "--superlink", superlink, "--clientappio-api-address", f"127.0.0.1:{clientappio_port}",
           "--node-config", " ".join(f"{k}={json.dumps(v)}" for k, v in config.items())]
    if root_certificates is None:
        return [*cmd, "--insecure"]
    cmd += ["--root-certificates", str(root_certificates)]
    if auth_key is not None:
        if not auth_key.is_file():
            raise DsfedError(f"--auth-key {auth_key}: not found")
        cmd += ["--auth-supernode-private-key", str(auth_key)]
    return cmd
