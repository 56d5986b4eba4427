"""`python -m dsfed.orchestration.prefect_server -- CMD`: CMD reports to the running Prefect server, and its exit code passes through."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dsfed.orchestration.prefect_server import healthy

pytestmark = pytest.mark.slow


def test_reuses_a_running_server_and_passes_the_exit_code(prefect_api: str) -> None:
    assert healthy(prefect_api) and not healthy("http://127.0.0.1:9/api")
    env = {**os.environ, "PREFECT_API_URL": prefect_api}
    script = "import os, sys; print(os.environ['PREFECT_API_URL']); sys.exit(3)"
    result = subprocess.run([sys.executable, "-m", "dsfed.orchestration.prefect_server", "--", sys.executable, "-c", script],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 3
    assert result.stdout.strip() == prefect_api and f"reporting to {prefect_api}" in result.stderr


def test_stage_commands_run_with_dsfeds_interpreter_when_the_environment_is_not_activated(prefect_api: str) -> None:
    """`dvc.yaml` says `python -m ...`: with PATH lacking the environment, `python` must still be this one."""
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "dsfed.orchestration.prefect_server", "--", "sh", "-c",
                             "command -v python; python -c 'import dsfed, typer'"],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == os.path.join(os.path.dirname(sys.executable), "python")
