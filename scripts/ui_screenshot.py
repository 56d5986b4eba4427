"""Screenshots of the Prefect UI with headless Chromium: the flow runs list, the latest ``redistill`` (or
``pipeline``) run with its stage tasks, and the deployments.

Needs Chromium (``apt-get install chromium``) and a Prefect server with the pipeline's runs, e.g. ``make ui``
after ``make demo``, or the database ``benchmarks/incremental.py --keep`` leaves::

    PREFECT_HOME=/tmp/dsfed-incremental/prefect prefect server start --port 4200 &
    python scripts/ui_screenshot.py --url http://127.0.0.1:4200 --out docs/ui

Writes ``runs.png``, ``redistill-run.png``, ``pipeline-run.png`` (the latest completed run of each, when
there is one: the pipeline's page shows one task per DVC stage) and ``deployments.png`` into ``--out``.
The UI is a single-page app that fetches its data after loading, so each page gets ``--wait`` seconds of
virtual time before the capture.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
         "--disable-background-networking", "--no-first-run", "--no-default-browser-check", "--mute-audio"]


def _post(api: str, path: str, body: dict[str, object]) -> list[dict[str, object]]:
    request = urllib.request.Request(f"{api}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def latest_run(api: str, flow_name: str) -> str | None:
    """The id of the latest completed flow run of ``flow_name`` (None when there is none)."""
    runs = _post(api, "/flow_runs/filter", {"flows": {"name": {"any_": [flow_name]}},
                                            "flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}},
                                            "sort": "START_TIME_DESC", "limit": 1})
    return str(runs[0]["id"]) if runs else None


def capture(browser: str, url: str, out: Path, size: str, wait_s: float) -> None:
    """One page, captured after ``wait_s`` seconds of virtual time."""
    done = subprocess.run([browser, *FLAGS, f"--window-size={size}", f"--virtual-time-budget={int(wait_s * 1000)}",
                           f"--screenshot={out}", url], capture_output=True, text=True, timeout=180)
    if done.returncode != 0 or not out.is_file():
        raise SystemExit(f"chromium failed on {url}:\n{done.stderr[-2000:]}")
    print(f"{out} <- {url}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:4200", help="the UI (the API is <url>/api)")
    parser.add_argument("--out", type=Path, default=Path("docs/ui"))
    parser.add_argument("--size", default="1600,1000", help="window size, W,H")
    parser.add_argument("--wait", type=float, default=40.0, help="virtual seconds per page before the capture")
    args = parser.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        raise SystemExit("no chromium on PATH (apt-get install chromium)")
    api = f"{args.url.rstrip('/')}/api"
    try:
        urllib.request.urlopen(f"{api}/health", timeout=5).close()
    except OSError as exc:
        raise SystemExit(f"no Prefect server answers at {api}: {exc}") from None
    args.out.mkdir(parents=True, exist_ok=True)
    capture(browser, f"{args.url}/runs", args.out / "runs.png", args.size, args.wait)
    for name in ("redistill", "pipeline"):
        run = latest_run(api, name)
        if run is None:
            print(f"no completed {name} run: its page is skipped", file=sys.stderr)
            continue
        capture(browser, f"{args.url}/runs/flow-run/{run}", args.out / f"{name}-run.png", args.size, args.wait)
    capture(browser, f"{args.url}/deployments", args.out / "deployments.png", args.size, args.wait)


if __name__ == "__main__":
    main()
