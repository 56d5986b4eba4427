"""Where a Flower message's time goes at a SuperNode, read from the node's own log (``FLWR_LOG_LEVEL=DEBUG``
gives its lines timestamps).

Per message the node logs ``Receiving``/``Received successfully`` (pulled from the SuperLink), the SuperExec's
``Loading ClientApp`` (a fresh ``flwr-clientapp`` process is running and loads dsfed's ClientApp),
``ClientAppIo.PushMessages`` (the ClientApp's reply is ready) and ``Sending:`` (back to the SuperLink). The
phases, per message:

- ``node_poll_s``: from the node's previous reply to this message's arrival: the SuperNode sleeps 3 s when its
  pull finds nothing (Flower's loop), so a message the server sends right after a reply waits for the next pull;
- ``launch_s``: arrival to the ClientApp loading: the SuperExec polls for tasks every second and starts a process;
- ``clientapp_s``: the ClientApp's process: imports (torch, MONAI, dsfed), the node rebuilding its client from its
  state folder, and the task itself;
- ``reply_s``: the reply handed back to the SuperLink.
"""

from __future__ import annotations

import re
import statistics
from datetime import datetime
from pathlib import Path

__all__ = ["message_phases", "summarise_phases"]

_LINE = re.compile(r"^\w+ (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}):?\s+(.*)$")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def message_phases(log: Path) -> list[dict[str, float | str]]:
    """One row per message answered in a SuperNode's DEBUG log: its type and the phases above (seconds)."""
    rows: list[dict[str, float | str]] = []
    received = loading = pushed = last_sent = None
    for raw in log.read_text(errors="replace").splitlines():
        match = _LINE.match(_ANSI.sub("", raw))
        if not match:
            continue
        at, text = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f"), match.group(2)
        if text.startswith("Received successfully"):
            received, loading, pushed = at, None, None
        elif text.startswith("Loading ClientApp") and received is not None:
            loading = at
        elif text.startswith("ClientAppIo.PushMessages") and loading is not None:
            pushed = at
        elif text.startswith("Sending:") and received is not None and loading is not None and pushed is not None:
            rows.append({"type": text.split()[1], "node_poll_s": (received - last_sent).total_seconds() if last_sent else float("nan"),
                         "launch_s": (loading - received).total_seconds(), "clientapp_s": (pushed - loading).total_seconds(),
                         "reply_s": (at - pushed).total_seconds()})
            last_sent, received = at, None
    return rows


def summarise_phases(rows: list[dict[str, float | str]]) -> dict[str, object]:
    """Median seconds per phase over ``rows`` (the node-poll wait only between messages of one run, under 10 s:
    a longer gap is the server's own work, not the node's poll), and the message count per type."""
    def median(key: str, keep: float = float("inf")) -> float:
        values = [float(r[key]) for r in rows if float(r[key]) == float(r[key]) and float(r[key]) < keep]
        return round(statistics.median(values), 2) if values else float("nan")

    types: dict[str, int] = {}
    for row in rows:
        types[str(row["type"])] = types.get(str(row["type"]), 0) + 1
    return {"messages": len(rows), "by_type": dict(sorted(types.items())), "median_s": {
        "node_poll": median("node_poll_s", 10.0), "launch": median("launch_s"), "clientapp": median("clientapp_s"), "reply": median("reply_s")}}
