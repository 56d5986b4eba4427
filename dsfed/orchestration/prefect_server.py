"""Run a command against one Prefect server: the running one, or a local one started for the command.

Without ``PREFECT_API_URL`` every flow process starts (and stops) its own temporary Prefect server, about
10 s per DVC stage on 2 CPU cores. ``dsfed repro`` (or ``python -m dsfed.orchestration.prefect_server -- dvc repro``) pays that once: it reuses the
server ``PREFECT_API_URL`` names when it answers, else the one on 127.0.0.1:4200 (e.g. `prefect server
start` left running), else starts one on a free loopback port for the command and stops it afterwards.
Flow runs are then recorded in that server's database (``PREFECT_HOME``), so the UI shows them later.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import typer

__all__ = ["DEFAULT_URL", "healthy", "run_with_server", "start_server", "stop_server"]

DEFAULT_URL = "http://127.0.0.1:4200/api"


def healthy(url: str, timeout: float = 2.0) -> bool:
    """Whether a Prefect API answers its health check at ``url`` (…/api)."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=timeout) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(home: str | Path | None = None, port: int | None = None, log: str | Path | None = None,
                 timeout: float = 120.0) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``prefect server start`` on 127.0.0.1 (its own process group) and wait until it answers.

    Args:
        home: PREFECT_HOME (its database); None keeps the environment's (default ~/.prefect).
        port: None picks a free one.
        log: where the server's output goes (default: discarded).

    Returns:
        (the process, its API URL).

    Raises:
        RuntimeError: it exited or did not answer within ``timeout`` seconds (with its last output).
    """
    port = port or _free_port()
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    if home is not None:
        env["PREFECT_HOME"] = str(home)
    out = open(log, "wb") if log is not None else subprocess.DEVNULL  # noqa: SIM115 - owned by the server process
    prefect = Path(sys.executable).parent / "prefect"
    proc = subprocess.Popen([str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + timeout
    while not healthy(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_server(proc)
            tail = Path(log).read_text(errors="replace")[-2000:] if log is not None else ""
            raise RuntimeError(f"the Prefect server on port {port} did not start\n{tail}")
        time.sleep(0.5)
    return proc, url


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """Stop the server and its workers (the whole process group)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, 15)
            proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, 9)
            proc.wait()


def run_with_server(command: list[str]) -> int:
    """Run ``command`` with PREFECT_API_URL pointing at a running Prefect server (started here if none
    answers, and stopped afterwards); returns its exit code.

    The folder of this interpreter goes first on PATH, so the stages' ``python -m ...`` commands run with
    the environment dsfed is installed in even when it is not activated (``.venv/bin/dsfed repro``)."""
    url = os.environ.get("PREFECT_API_URL")
    proc = None
    if url and healthy(url):
        print(f"prefect server: reporting to {url}", file=sys.stderr)
    elif healthy(DEFAULT_URL):
        url = DEFAULT_URL
        print(f"prefect server: reporting to the running server at {url}", file=sys.stderr)
    else:
        t0 = time.perf_counter()
        proc, url = start_server()
        print(f"prefect server: started a Prefect server at {url} in {time.perf_counter() - t0:.1f} s "
              "(stopped when the command ends)", file=sys.stderr)
    try:
        path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        return subprocess.call(command, env={**os.environ, "PREFECT_API_URL": url, "PATH": path})
    finally:
        if proc is not None:
            stop_server(proc)


def main(command: list[str] = typer.Argument(..., help="The command to run, after `--` (e.g. `-- dvc repro`).")) -> None:
    """Run COMMAND with PREFECT_API_URL pointing at a running Prefect server (started here if none answers)."""
    raise typer.Exit(run_with_server(command))


if __name__ == "__main__":
    typer.run(main)
