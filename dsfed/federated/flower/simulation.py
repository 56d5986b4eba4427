"""Many simulated hospitals on one machine: the federated stages on Flower's simulation engine.

``federated.engine: simulation`` runs the same ServerApp and ClientApp as ``federated.engine: flower``, but
every client is a virtual SuperNode of Flower's simulation engine (Ray actors, ``flwr[simulation]``) in this
machine rather than a hospital's own process: the stage starts a private SuperLink with ``--simulation`` on
free 127.0.0.1 ports, submits the run with ``num-supernodes`` = the federation's size, and stops the
SuperLink when the run ends. Virtual node ``i`` (Flower's ``partition-id``) is the federation's ``i``-th
client and reads only that client's store (the stage names it: ``artifacts/clients/<client>/data.zarr``); its state goes where the
in-process engine keeps it (``<out>/client-state/<client>``), so a restarted stage resumes the same way.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dsfed.errors import DsfedError
from dsfed.federated.flower.launch import NOT_FINISHED, flower_bin, flwr_env, run_on_flower
from dsfed.federated.flower.ports import free_ports, wait_port
from dsfed.federated.settings import FlowerSection

__all__ = ["run_on_simulation", "simulated_node"]

ATTEMPTS = 3

log = logging.getLogger(__name__)


def simulated_node(node_config: dict[str, Any], run_config: dict[str, Any]) -> dict[str, Any]:
    """The node config of simulated node ``partition-id``: its client's name, store and state folder.

    ``run_config`` holds ``clients`` (JSON: ``[[client, store], ...]`` in partition order) and ``out`` (the
    stage's output folder, whose ``client-state/`` holds every client's state, as in process)."""
    clients = json.loads(str(run_config.get("clients") or "[]"))
    index = int(node_config["partition-id"])
    if not 0 <= index < len(clients):
        raise DsfedError(f"simulated node {index}: the run names {len(clients)} clients")
    client, store = clients[index]
    return {"client": client, "data": store, "state": str(Path(str(run_config["out"])) / "client-state"),
            "device": str(run_config.get("device", "auto"))}


def run_on_simulation(settings: FlowerSection, run_config: dict[str, Any], out: Path, stores: Mapping[str, Path]) -> None:
    """Run ``run_config``'s task with one simulated node per client of ``stores`` (client -> its store, in
    partition order).

    The SuperLink and the ``flwr`` command get a private FLWR_HOME (the user's connection config for
    ``federated.engine: flower`` is left alone); the SuperLink's log tail is logged if the run fails."""
    if importlib.util.find_spec("ray") is None:
        raise DsfedError("federated.engine: simulation needs Flower's simulation engine: pip install 'dsfed[simulation]'")
    for attempt in range(1, ATTEMPTS + 1):
        try:
            _simulate_once(settings, run_config, out, stores)
            return
        except DsfedError as exc:
            if not str(exc).startswith(NOT_FINISHED) or attempt == ATTEMPTS:
                raise
            # Ray's head sometimes does not come up in time on a busy machine ("Simulation Runtime crashed" before
            # any message): a fresh SuperLink and Ray, resuming from the run's last checkpoint, if there is one
            log.warning("simulation: the engine crashed (%s); starting it again (attempt %d of %d)", exc, attempt + 1, ATTEMPTS)


def _simulate_once(settings: FlowerSection, run_config: dict[str, Any], out: Path, stores: Mapping[str, Path]) -> None:
    control, fleet, appio = free_ports(3)
    with tempfile.TemporaryDirectory(prefix="dsfed-simulation-") as state:
        cmd = [flower_bin("flower-superlink"), "--simulation", "--insecure", "--control-api-address", f"127.0.0.1:{control}",
               "--fleet-api-address", f"127.0.0.1:{fleet}", "--serverappio-api-address", f"127.0.0.1:{appio}",
               "--database", str(Path(state) / "superlink.db"), "--disable-runtime-dependency-installation"]
        home, log_path = Path(state) / "home", Path(state) / "superlink.log"
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen(cmd, env=flwr_env(home), stdout=log_file, stderr=subprocess.STDOUT)
        try:
            wait_port(control, 60.0, proc, "the simulation's SuperLink")
            clients = [[name, str(path.resolve())] for name, path in stores.items()]
            log.info("simulation: %d simulated nodes (%s), %d CPU(s) each", len(clients), ", ".join(stores), settings.client_cpus)
            local = settings.model_copy(update={"control": f"127.0.0.1:{control}", "root_certificates": None})
            federation = {"num-supernodes": len(clients), "client-resources-num-cpus": settings.client_cpus,
                          "client-resources-num-gpus": settings.client_gpus}
            run_on_flower(local, home, {**run_config, "clients": json.dumps(clients)}, out, federation_config=federation)
        except Exception:
            for line in log_path.read_text(errors="replace").splitlines()[-20:]:
                log.warning("simulation superlink | %s", line)
            raise
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
