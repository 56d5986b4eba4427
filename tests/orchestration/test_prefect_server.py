"""The Prefect server `dsfed repro` starts for its run is stopped however the run ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dsfed.orchestration.prefect_server import RECORD_FILE

pytestmark = pytest.mark.slow

_RUN = "from dsfed.orchestration.prefect_server import run_with_server; import sys; sys.exit(run_with_server(sys.argv[1:]))"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"   # a zombie has ended
    except (ProcessLookupError, FileNotFoundError):
        return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_terminated_run_stops_its_server_and_its_command(tmp_path: Path, sig: signal.Signals) -> None:
    home = tmp_path / "prefect-home"
    home.mkdir()
    started = tmp_path / "command-started"
    command = [sys.executable, "-c", f"import pathlib, time; pathlib.Path({str(started)!r}).touch(); time.sleep(600)"]
    env = {**os.environ, "PREFECT_HOME": str(home)}
    env.pop("PREFECT_API_URL", None)
    # SIGHUP as a terminal's shell leaves it: a suite started under nohup would pass its ignored SIGHUP on to the
    # command (ignored signals survive exec), which would then outlive the hangup the run forwarded to it
    run = subprocess.Popen([sys.executable, "-c", _RUN, *command], env=env,
                           preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))
    server = None
    try:
        deadline = time.monotonic() + 180
        while not started.exists():
            assert run.poll() is None and time.monotonic() < deadline, "the command never started"
            time.sleep(0.2)
        records = list(home.glob(RECORD_FILE.format(port="*")))
        assert len(records) == 1, records
        server = int(json.loads(records[0].read_text())["pid"])
        assert _alive(server)
        run.send_signal(sig)
        assert run.wait(timeout=60) != 0
        deadline = time.monotonic() + 30
        while _alive(server) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(server), "the Prefect server outlived the run that started it"
        leftover = subprocess.run(["pgrep", "-f", str(started)], capture_output=True, text=True).stdout.split()
        assert not leftover, f"the command outlived the run: {leftover}"
    finally:   # nothing left behind when the test fails
        if run.poll() is None:
            run.kill()
        if server is not None and _alive(server):
            os.killpg(server, signal.SIGKILL)
        subprocess.run(["pkill", "-f", str(started)], check=False)
