"""Run a federated task on Flower from a stage: ``flwr run`` of dsfed's Flower app against the SuperLink.

The stage's process stays the one DVC and Prefect watch: it writes the ``flwr`` command's connection
config (``federated.flower.home``), submits the run with the task in Flower's run config, streams its log,
and checks how the ServerApp ended: it leaves ``<out>/flower-status.txt``, ``ok <token>`` (the token of
this submission, so an older run's file never passes) or ``error <one line>``. A run that leaves neither
(a crash of Flower itself, e.g. a simulation engine that did not start) fails with the last error line of
its log: ``flwr run`` exits 0 whenever the run was accepted.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from dsfed.errors import DsfedError
from dsfed.federated.settings import FlowerSection

__all__ = ["APP_DIR", "CONNECTION", "NOT_FINISHED", "STATUS_FILE", "flower_bin", "flwr_env", "last_error", "last_words", "run_on_flower", "write_connection"]

log = logging.getLogger(__name__)
APP_DIR = Path(__file__).parent / "app"
CONNECTION = "dsfed"
STATUS_FILE = "flower-status.txt"
NOT_FINISHED = "the Flower run ended without finishing its task"


def flower_bin(name: str) -> str:
    """A Flower command (``flwr``, ``flower-superlink``, ...) of this environment."""
    return str(Path(sys.executable).parent / name)


def flwr_env(home: Path) -> dict[str, str]:
    """The environment of a ``flwr``/``flower-*`` command: this venv first on PATH (Flower starts its
    ServerApp and ClientApp processes from PATH), its own FLWR_HOME, no telemetry or update check."""
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "FLWR_HOME": str(home),
            "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"}


def write_connection(settings: FlowerSection, home: Path) -> Path:
    """``<home>/config.toml`` with the ``dsfed`` connection to the SuperLink's Control API."""
    home.mkdir(parents=True, exist_ok=True)
    lines = ["[superlink]", f'default = "{CONNECTION}"', "", f"[superlink.{CONNECTION}]", f"address = {json.dumps(settings.control)}"]
    if settings.root_certificates is None:
        lines.append("insecure = true")
    else:
        lines.append(f"root-certificates = {json.dumps(str(Path(settings.root_certificates).resolve()))}")
    path = home / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def last_words(output: str) -> str:
    """The last line of a command's output that says something (not a box border of Flower's error panel)."""
    lines = [line.strip(" \t│╭╮╰╯─") for line in output.splitlines()]
    said = [line for line in lines if any(ch.isalnum() for ch in line)]
    return said[-1] if said else "no output"


def last_error(output: str) -> str:
    """The last ``SomeError: message`` line of a log (a traceback's verdict), else its last words."""
    errors = [line.strip() for line in output.splitlines() if re.match(r"^\s*[\w.]*(Error|Exception|Exit)\w*: \S", line)]
    return errors[-1] if errors else last_words(output)


def _toml_value(key: str, value: Any) -> str:
    """A run-config value as Flower's ``--run-config`` parser takes it: a quoted value may not hold its own
    quote, so a string with double quotes (JSON) travels as a TOML literal string in single quotes."""
    if isinstance(value, str) and '"' in value:
        if "'" in value:
            raise DsfedError(f"run config {key}: {value!r} holds both quote characters; Flower's --run-config cannot carry it")
        return f"'{value}'"
    return json.dumps(value)


def _overrides(values: dict[str, Any]) -> str:
    return " ".join(f"{key}={_toml_value(key, value)}" for key, value in values.items())


def run_on_flower(settings: FlowerSection, home: Path, run_config: dict[str, Any], out: Path,
                  federation_config: dict[str, Any] | None = None) -> None:
    """Submit a run of dsfed's Flower app with ``run_config`` and wait for it; one line on failure.

    ``federation_config``: Flower's simulation settings (``num-supernodes``, ...) for a SuperLink started
    with ``--simulation`` (:mod:`dsfed.federated.flower.simulation`)."""
    write_connection(settings, home)
    token = uuid.uuid4().hex   # this submission's: only its ServerApp can say "ok <token>"
    cmd = [flower_bin("flwr"), "run", str(APP_DIR), CONNECTION, "--stream", "--run-config", _overrides({**run_config, "token": token})]
    if federation_config:
        cmd += ["--federation-config", _overrides(federation_config)]
    status = out / STATUS_FILE
    status.unlink(missing_ok=True)
    log.info("flower: submitting %s to the SuperLink at %s", run_config.get("task"), settings.control)
    proc = subprocess.run(cmd, env=flwr_env(home), text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    for line in proc.stdout.splitlines():
        log.info("flower | %s", line)
    said = status.read_text().strip() if status.is_file() else ""
    if said.startswith("error "):
        raise DsfedError(f"the Flower run failed: {said[len('error '):]}")
    if proc.returncode != 0:
        raise DsfedError(f"`flwr run` against {settings.control} exited with {proc.returncode}: {last_words(proc.stdout)}")
    if said != f"ok {token}":
        raise DsfedError(f"{NOT_FINISHED}: {last_error(proc.stdout)}")
