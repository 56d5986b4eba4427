"""The Flower engine for real: a SuperLink and three SuperNodes as separate processes on 127.0.0.1, with TLS
and node authentication, run two rounds; weights, ledger and metrics equal the in-process engine's."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file

from dsfed.config import load_params
from dsfed.errors import DsfedError
from dsfed.federated.checkpoint import latest_checkpoint
from dsfed.federated.flower.deploy import create_certificates
from dsfed.federated.ledger import read_ledger
from dsfed.stages.federated_outputs import train_method, write_method_outputs
from dsfed.stages.federated_run import run_method
from dsfed.stages.prepare import store_path
from tests.federated.project import tiny_raw

pytestmark = pytest.mark.slow
METHOD = {"fedunet": {"model": "unet", "input_size": 32}}
_NONE = SimpleNamespace(round=-1)


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _wait_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def _dsfed(*args: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}   # the in-process run below computes on one thread too
    return subprocess.Popen([sys.executable, "-m", "dsfed", *args], stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)


@pytest.fixture
def flower(project: Path, stores: Path) -> Iterator[dict[str, object]]:
    certs = create_certificates(project / "certs", ["a", "b", "h", "intruder"])
    fleet, control, appio, *node_ports = _free_ports(7)
    logs = project / "logs"
    logs.mkdir()
    server_args = ["server", "start", "--state", str(project / ".flower/superlink"), "--fleet-port", str(fleet), "--control-port", str(control),
                   "--serverappio-port", str(appio), "--certs", str(certs.folder), "--node-auth"]
    procs = [_dsfed(*server_args, log=logs / "superlink.log")]

    def restart_server() -> None:
        """SIGKILL the SuperLink (its ServerApp dies with it) and start it again on the same database."""
        procs[0].kill()
        procs[0].wait()
        time.sleep(6)   # Flower's children notice their parent is gone within ~5 s
        procs[0] = _dsfed(*server_args, log=logs / "superlink-restarted.log")
        _wait_port(control)

    try:
        _wait_port(control)
        for client in ("a", "b", "h"):
            out = subprocess.run([sys.executable, "-m", "dsfed", "node", "register", str(certs.node_key(client)) + ".pub",
                                  "--control", f"127.0.0.1:{control}", "--root-certificates", str(certs.ca),
                                  "--home", str(project / ".flower")], capture_output=True, text=True, check=False)
            assert out.returncode == 0 and "registered" in out.stdout, out.stdout + out.stderr
        nodes = {}
        for client, port in zip(("a", "b", "h", "intruder"), node_ports, strict=True):
            data = store_path(stores, client if client != "intruder" else "a")
            nodes[client] = _dsfed("node", "start", "--client", client if client != "intruder" else "a", "--data", str(data),
                                   "--state", str(project / "nodes" / client), "--superlink", f"127.0.0.1:{fleet}",
                                   "--clientappio-port", str(port), "--root-certificates", str(certs.ca),
                                   "--auth-key", str(certs.node_key(client)), log=logs / f"node_{client}.log")
        procs += list(nodes.values())
        yield {"control": f"127.0.0.1:{control}", "ca": str(certs.ca), "nodes": nodes, "logs": logs, "restart_server": restart_server}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def test_two_rounds_on_flower_with_tls_and_node_auth_equal_the_in_process_run(project: Path, stores: Path,
                                                                             flower: dict[str, object]) -> None:
    raw = tiny_raw(METHOD)
    raw["federated"] |= {"engine": "flower", "flower": {"control": flower["control"], "root_certificates": flower["ca"],
                                                         "timeout_s": 300, "wait_nodes_s": 90}}
    (project / "params.yaml").write_text(yaml.safe_dump(raw))
    params = load_params(project / "params.yaml")
    metrics = train_method(params, project / "params.yaml", "fedunet", stores)

    torch.set_num_threads(1)
    local = run_method(params, "fedunet", stores, project / "inprocess", progress=False)
    out = stores / "federated/fedunet"
    saved = load_file(str(out / "model.safetensors"))
    assert all(torch.equal(saved[k], v) for k, v in local.selected.items())          # bit-identical
    expected = write_method_outputs(local, project / "inprocess")
    assert metrics == expected   # selection, validation and test metrics per client, communication
    strip = lambda rows: [(r["round"], r["client"], r["direction"], r["what"], r["bytes"]) for r in rows]  # noqa: E731
    assert strip(read_ledger(out / "ledger.csv")) == strip(read_ledger(project / "inprocess/ledger.csv"))
    # the node whose key was never registered was refused and never served
    intruder = flower["nodes"]["intruder"]   # type: ignore[index]
    assert intruder.wait(timeout=60) != 0
    assert "No SuperNode found" in (flower["logs"] / "node_intruder.log").read_text(errors="replace")   # type: ignore[operator]
    # each node kept its own state, in its own folder
    assert all((project / "nodes" / c / c / "setup.json").is_file() for c in ("a", "b", "h"))


def test_a_server_killed_mid_run_resumes_from_its_checkpoint_with_nodes_that_kept_their_state(
        project: Path, stores: Path, flower: dict[str, Any]) -> None:
    raw = tiny_raw(METHOD, rounds=3)
    raw["federated"] |= {"engine": "flower", "flower": {"control": flower["control"], "root_certificates": flower["ca"],
                                                         "timeout_s": 300, "wait_nodes_s": 120}}
    (project / "params.yaml").write_text(yaml.safe_dump(raw))
    params = load_params(project / "params.yaml")
    out = stores / "federated/fedunet"
    failed: list[BaseException] = []

    def first_attempt() -> None:
        try:
            train_method(params, project / "params.yaml", "fedunet", stores)
        except BaseException as exc:   # noqa: BLE001 - the attempt is expected to fail; the test checks how
            failed.append(exc)

    attempt = threading.Thread(target=first_attempt)
    attempt.start()
    deadline = time.monotonic() + 600
    while not any((latest_checkpoint(c) or _NONE).round >= 1 for c in out.glob("checkpoints/*")):
        assert time.monotonic() < deadline and attempt.is_alive(), "round 1 never checkpointed"
        time.sleep(0.5)
    flower["restart_server"]()
    attempt.join(timeout=300)
    assert not attempt.is_alive() and failed and isinstance(failed[0], DsfedError) and "\n" not in str(failed[0])

    metrics = train_method(params, project / "params.yaml", "fedunet", stores)   # the nodes reconnect by themselves
    assert metrics["communication"]["rounds"] == 3 and metrics["resumed_from"] >= 1
    torch.set_num_threads(1)
    local = run_method(params, "fedunet", stores, project / "inprocess", progress=False)
    saved = load_file(str(out / "model.safetensors"))
    assert all(torch.equal(saved[k], v) for k, v in local.selected.items())
    assert metrics["test"] == write_method_outputs(local, project / "inprocess")["test"]
