"""Run a command against one Prefect server: the running one dsfed started, or a local one started for the command.

Without ``PREFECT_API_URL`` every flow process starts (and stops) its own temporary Prefect server, about
10 s per DVC stage on 2 CPU cores. ``dsfed repro`` (or ``python -m dsfed.orchestration.prefect_server -- dvc repro``)
pays that once: it reuses the server ``PREFECT_API_URL`` names when it answers (a server the user named), else
the one on 127.0.0.1:4200 if dsfed started it (``make ui``), else starts one on a free loopback port for the
command and stops it afterwards. Flow runs are then recorded in that server's database (``PREFECT_HOME``), so
the UI shows them later.

A server dsfed starts is closed to other local processes and web pages: it takes requests only with the auth
string in ``$PREFECT_HOME/dsfed-server-auth`` (created once, mode 0600; the UI asks for it), CSRF protection is
on and CORS allows only its own origin. ``$PREFECT_HOME/dsfed-server-<port>.json`` records its process, so a
CLI can tell that server from anything else answering on the port (:func:`ours`); it never sends the auth
string to a server it did not start.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import typer

__all__ = ["DEFAULT_URL", "auth_string", "client_env", "healthy", "ours", "prefect_home", "run_with_server", "start_server",
           "stop_server", "trusted_server"]

DEFAULT_URL = "http://127.0.0.1:4200/api"
AUTH_FILE = "dsfed-server-auth"
RECORD_FILE = "dsfed-server-{port}.json"   # one record per port: the UI's and a command's own server side by side


def prefect_home() -> Path:
    """``PREFECT_HOME`` (default ``~/.prefect``): the server's database, auth string and record."""
    return Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect")


def auth_string(home: str | Path | None = None) -> str:
    """The ``user:password`` string of servers dsfed starts with ``home``, created (mode 0600) on first use."""
    path = Path(home or prefect_home()) / AUTH_FILE
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"dsfed:{secrets.token_urlsafe(24)}\n")
    return path.read_text().strip()


def client_env(url: str, home: str | Path | None = None) -> dict[str, str]:
    """What a process needs to talk to the server dsfed started at ``url`` with ``home``."""
    return {"PREFECT_API_URL": url, "PREFECT_API_AUTH_STRING": auth_string(home)}


def _listener(port: int) -> int | None:
    """The pid listening on 127.0.0.1:``port`` (None when none, or when it is another user's process)."""
    import psutil

    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            return conn.pid
    return None


def ours(url: str, home: str | Path | None = None) -> bool:
    """Whether the server at ``url`` is the one dsfed started with ``home``: its record names this URL, and the
    process listening on the port is the recorded one (or one of its children)."""
    import psutil

    try:
        port = int(url.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[1])
        saved = json.loads((Path(home or prefect_home()) / RECORD_FILE.format(port=port)).read_text())
        listener = _listener(port)
        if saved.get("url") != url or listener is None:
            return False
        server = psutil.Process(int(saved["pid"]))
        return listener == server.pid or listener in {c.pid for c in server.children(recursive=True)}
    except (OSError, ValueError, KeyError, IndexError, psutil.Error):
        return False


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

    The server takes requests only with :func:`auth_string` (of ``home``), has CSRF protection on and allows
    CORS from its own origin only; ``home``'s record names it for :func:`ours`.

    Args:
        home: PREFECT_HOME (its database, auth string and record); None: the environment's (default ~/.prefect).
        port: None picks a free one.
        log: where the server's output goes (default: discarded).

    Returns:
        (the process, its API URL).

    Raises:
        RuntimeError: it exited or did not answer within ``timeout`` seconds (with its last output).
    """
    port = port or _free_port()
    home = Path(home) if home is not None else prefect_home()
    secret = auth_string(home)
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_HOME": str(home),
           # closed to other local processes and web pages: basic auth, CSRF tokens, CORS for its own origin only
           "PREFECT_SERVER_API_AUTH_STRING": secret, "PREFECT_API_AUTH_STRING": secret,
           "PREFECT_SERVER_CSRF_PROTECTION_ENABLED": "true",
           "PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS": f"http://127.0.0.1:{port}"}
    env.pop("PREFECT_API_URL", None)
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
    (home / RECORD_FILE.format(port=port)).write_text(json.dumps({"url": url, "pid": proc.pid}) + "\n")
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


def trusted_server() -> tuple[str, dict[str, str]] | None:
    """The running server a command may use, and what to add to its environment: the one ``PREFECT_API_URL``
    names (the user's choice; nothing added), else the one dsfed started on 127.0.0.1:4200 (:func:`ours`; its
    auth string); None when neither answers."""
    named = os.environ.get("PREFECT_API_URL")
    if named and healthy(named):
        return named, {}
    if ours(DEFAULT_URL):
        return DEFAULT_URL, client_env(DEFAULT_URL)
    return None


def run_with_server(command: list[str]) -> int:
    """Run ``command`` against a Prefect server: the one ``PREFECT_API_URL`` names (the user's choice, with the
    environment's ``PREFECT_API_AUTH_STRING``), else the one dsfed started on 127.0.0.1:4200 (:func:`ours`),
    else one started here for the command and stopped afterwards; returns its exit code.

    The folder of this interpreter goes first on PATH, so the stages' ``python -m ...`` commands run with
    the environment dsfed is installed in even when it is not activated (``.venv/bin/dsfed repro``)."""
    proc = None
    env = {**os.environ}
    running = trusted_server()
    if running is not None:
        env |= running[1]
        print(f"prefect server: reporting to {running[0]}", file=sys.stderr)
    else:
        if healthy(DEFAULT_URL):
            print(f"prefect server: {DEFAULT_URL} answers but dsfed did not start it (no record of it in {prefect_home()}); "
                  "not trusted: name it in PREFECT_API_URL to use it", file=sys.stderr)
        t0 = time.perf_counter()
        proc, url = start_server()
        env |= client_env(url)
        print(f"prefect server: started a Prefect server at {url} in {time.perf_counter() - t0:.1f} s "
              "(stopped when the command ends)", file=sys.stderr)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    try:
        child = subprocess.Popen(command, env=env)
    except BaseException:
        if proc is not None:
            stop_server(proc)
        raise
    # a SIGTERM (or SIGHUP) to this process goes on to the command, and the server started here is stopped when it
    # ends: the server runs in its own session, so without this a terminated `dsfed repro` left it running
    main_thread = threading.current_thread() is threading.main_thread()   # only there can Python take signals
    forward = {sig: signal.signal(sig, lambda signum, _frame: child.send_signal(signum))
               for sig in ((signal.SIGTERM, signal.SIGHUP) if main_thread else ())}
    try:
        return child.wait()
    finally:
        for sig, previous in forward.items():
            signal.signal(sig, previous)
        if child.poll() is None:
            child.terminate()
            child.wait()
        if proc is not None:
            stop_server(proc)


def main(command: list[str] = typer.Argument(..., help="The command to run, after `--` (e.g. `-- dvc repro`).")) -> None:
    """Run COMMAND with PREFECT_API_URL pointing at a running Prefect server (started here if none answers)."""
    raise typer.Exit(run_with_server(command))


if __name__ == "__main__":
    typer.run(main)
