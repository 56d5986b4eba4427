"""Local ports for the Flower processes dsfed starts on one machine (simulation, tests, demos): free ones, and waiting for a listener."""

from __future__ import annotations

import socket
import subprocess
import time

from dsfed.errors import DsfedError

__all__ = ["free_ports", "wait_port"]


def free_ports(n: int) -> list[int]:
    """``n`` TCP ports free on 127.0.0.1 right now."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_port(port: int, timeout_s: float = 60.0, proc: subprocess.Popen[bytes] | None = None, what: str = "the SuperLink") -> None:
    """Wait until something listens on 127.0.0.1:``port``; fail at once if ``proc`` (what should listen) exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise DsfedError(f"{what} exited with {proc.returncode} before it listened on 127.0.0.1:{port}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise DsfedError(f"{what} did not listen on 127.0.0.1:{port} within {timeout_s:.0f} s")
