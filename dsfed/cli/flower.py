"""``dsfed certs create``, ``dsfed server start``, ``dsfed node start`` and ``dsfed node register``: Flower deployment."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import typer

from dsfed.errors import DsfedError

__all__ = ["register"]

certs_app = typer.Typer(help="Certificates for TLS and node keys for node authentication.", no_args_is_help=True)
server_app = typer.Typer(help="The federation's server side on Flower (a SuperLink).", no_args_is_help=True)
node_app = typer.Typer(help="A hospital's node on Flower (a SuperNode serving one client's own store).", no_args_is_help=True)


@certs_app.command("create")
def certs_create(
    folder: Path = typer.Argument(..., help="Folder to write ca.crt/ca.key, server.pem/server.key and node_<client>(.pub) into."),
    node: list[str] = typer.Option([], "--node", help="A client to make a node key for (repeat the option)."),
    host: list[str] = typer.Option(["127.0.0.1", "localhost"], "--host", help="A name or IP the server certificate is valid for (repeat)."),
    days: int = typer.Option(365, min=1, help="Validity in days."),
) -> None:
    """Create a CA, the server's certificate and node key pairs; existing files are kept, never overwritten."""
    from dsfed.federated.flower.deploy import create_certificates

    certs = create_certificates(folder, node, host, days)
    typer.echo(f"{folder}: CA {certs.ca.name}, server {certs.server_cert.name} ({', '.join(host)}), "
               f"node keys: {', '.join(certs.node_key(n).name for n in node) or 'none'}")
    typer.echo("Give each hospital ca.crt and its own node_<client> key; register node_<client>.pub with `dsfed node register`.")


def _run(cmd: list[str], home: Path) -> None:
    from dsfed.federated.flower.launch import flwr_env

    typer.echo("$ " + " ".join(cmd))
    try:
        os.execvpe(cmd[0], cmd, flwr_env(home))  # the Flower process replaces this one: Ctrl-C and kill reach it
    except OSError as exc:
        raise DsfedError(f"{cmd[0]}: cannot start ({exc.strerror}); is flwr installed (pip install -e .)?") from None


@server_app.command("start")
def server_start(
    state: Path = typer.Option(Path(".flower/superlink"), help="Folder of the SuperLink's database (registered nodes, runs)."),
    host: str = typer.Option("127.0.0.1", help="Address the node and control APIs bind to (another than 127.0.0.1 needs --certs)."),
    fleet_port: int = typer.Option(9092, help="Port hospitals' nodes connect to."),
    control_port: int = typer.Option(9093, help="Port `flwr run` (the pipeline's stages) submits runs to."),
    serverappio_port: int = typer.Option(9091, help="Port of the ServerApp's link (always on 127.0.0.1)."),
    certs: Path | None = typer.Option(None, help="Certificate folder (`dsfed certs create`): TLS on."),
    node_auth: bool = typer.Option(False, help="Only registered node keys may connect (needs --certs)."),
) -> None:
    """Start the SuperLink (foreground; Ctrl-C stops it). Point federated.flower.control at HOST:CONTROL_PORT."""
    from dsfed.federated.flower.deploy import Certificates, stop_orphan_serverapps, superlink_command

    cmd = superlink_command(state, host, fleet_port, control_port, serverappio_port, Certificates(certs) if certs else None, node_auth)
    for pid in stop_orphan_serverapps(serverappio_port):
        typer.echo(f"stopped ServerApp process {pid}, left running by an earlier SuperLink on port {serverappio_port}")
    _run(cmd, state.parent)


@node_app.command("start")
def node_start(
    client: str = typer.Option(..., "--client", help="This hospital's client name, as the server's params name it."),
    data: Path = typer.Option(..., "--data", help="Its own client store (a data.zarr folder); the only data the node reads."),
    state: Path = typer.Option(Path(".flower/node"), help="Folder where the node keeps its state between rounds and restarts."),
    superlink: str = typer.Option("127.0.0.1:9092", help="The server's node API (HOST:FLEET_PORT)."),
    clientappio_port: int = typer.Option(9094, help="A free local port for the node's own app link (one per node on a machine)."),
    root_certificates: Path | None = typer.Option(None, help="The federation's CA certificate (ca.crt): TLS on."),
    auth_key: Path | None = typer.Option(None, help="This node's private key (node_<client>) when the server authenticates nodes."),
    device: str = typer.Option("auto", help="cpu, cuda, or auto."),
    pretrained: Path | None = typer.Option(None, help="This node's copy of the server's federated.pretrained_dir (the methods' "
                                           "checkpoints, checked against the server's by sha256); default: the server's own path."),
    public: Path | None = typer.Option(None, help="SAM-Fed only: this node's copy of the public store (public images the "
                                       "clients distil on); default: the server's own path."),
) -> None:
    """Start this hospital's node (foreground; Ctrl-C stops it). It serves every federated run the server sends."""
    from dsfed.federated.flower.deploy import node_command

    cmd = node_command(client, data, state, superlink, clientappio_port, root_certificates, auth_key, device, pretrained, public)
    _run(cmd, state)


@node_app.command("register")
def node_register(
    public_key: Path = typer.Argument(..., help="The node's public key (node_<client>.pub)."),
    control: str = typer.Option("127.0.0.1:9093", help="The SuperLink's control API (HOST:CONTROL_PORT)."),
    root_certificates: Path = typer.Option(..., help="The federation's CA certificate (ca.crt)."),
    home: Path = typer.Option(Path(".flower"), help="FLWR_HOME for the flwr command (its connection config)."),
) -> None:
    """Register a node's public key with the SuperLink (node authentication); prints the node's ID."""
    from dsfed.federated.flower.launch import CONNECTION, flower_bin, flwr_env, write_connection
    from dsfed.federated.settings import FlowerSection

    if not public_key.is_file():
        raise DsfedError(f"{public_key}: not found")
    write_connection(FlowerSection(control=control, root_certificates=root_certificates), home)
    proc = subprocess.run([flower_bin("flwr"), "supernode", "register", str(public_key), CONNECTION], env=flwr_env(home), text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    lines = [line.strip() for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode != 0 or not any("registered" in line for line in lines):
        raise DsfedError(f"{public_key}: not registered: {lines[-1] if lines else 'no output'}")
    typer.echo(next(line for line in lines if "registered" in line))


def register(app: typer.Typer) -> None:
    app.add_typer(certs_app, name="certs")
    app.add_typer(server_app, name="server")
    app.add_typer(node_app, name="node")
