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
