"""What the stage hands `flwr run`, and how it reads a run's end (no Flower processes here)."""

from __future__ import annotations

import json

import pytest
from flwr.common.config import parse_config_args

from dsfed.errors import DsfedError
from dsfed.federated.flower.launch import _overrides, last_error, last_words
from dsfed.federated.flower.simulation import simulated_node


def test_run_config_values_survive_flowers_parser() -> None:
    clients = json.dumps([["a", "/data/site a/data.zarr"], ["b", "/data/b/data.zarr"]])
    values = {"task": "federated", "params": "/p/params.yaml", "clients": clients, "rounds": 3, "device": "auto"}
    assert parse_config_args([_overrides(values)]) == values
    with pytest.raises(DsfedError, match="both quote characters"):
        _overrides({"bad": "it's \"quoted\""})


def test_a_simulated_node_is_the_clients_partition() -> None:
    run = {"clients": json.dumps([["a", "/s/a.zarr"], ["h", "/s/h.zarr"]]), "out": "/o", "device": "cpu"}
    assert simulated_node({"partition-id": 1}, run) == {"client": "h", "data": "/s/h.zarr", "state": "/o/client-state", "device": "cpu"}
    with pytest.raises(DsfedError, match="names 2 clients"):
        simulated_node({"partition-id": 2}, run)


def test_a_failed_run_is_reported_by_its_last_error_line() -> None:
    log = "INFO: starting\nTraceback (most recent call last):\nRuntimeError: Timed out waiting for file gcs_server_port\n" \
          "RuntimeError: Simulation Runtime crashed.\nERROR: Exit Code: 700\n"
    assert last_error(log) == "RuntimeError: Simulation Runtime crashed."
    assert last_words("╭─ Error ─╮\n│ 'float' object cannot be interpreted │\n╰────╯\n") == "'float' object cannot be interpreted"


def test_a_restarted_server_stops_the_serverapp_an_earlier_superlink_left(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A SuperLink killed hard leaves its ``flwr-serverapp`` child running; `dsfed server start` stops the one on
    its ServerAppIo port (and only that one) before it starts the new SuperLink."""
    import subprocess
    import sys
    import time

    from dsfed.federated.flower.deploy import stop_orphan_serverapps

    program = tmp_path / "flwr-serverapp"   # a stand-in with Flower's program name and arguments
    program.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(120)\n")
    program.chmod(0o755)
    orphan = subprocess.Popen([str(program), "--serverappio-api-address", "127.0.0.1:47011", "--token", "x"])
    other = subprocess.Popen([str(program), "--serverappio-api-address", "127.0.0.1:47012", "--token", "y"])
    try:
        time.sleep(0.5)
        assert stop_orphan_serverapps(47011) == [orphan.pid]
        import psutil

        assert not psutil.pid_exists(orphan.pid) and other.poll() is None   # (psutil reaped our own child)
        assert stop_orphan_serverapps(47013) == []
    finally:
        for proc in (orphan, other):
            proc.kill()
            proc.wait()
