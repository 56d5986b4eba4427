"""Payload ledger: one CSV row per server<->client payload, with its exact size in bytes."""

from __future__ import annotations

import csv
import logging
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from dsfed.io import atomic_path

__all__ = ["DIRECTIONS", "EVALUATION_PREFIXES", "FIELDS", "Ledger", "is_evaluation", "ledger_totals", "read_ledger"]

FIELDS = ("round", "client", "direction", "what", "bytes")
DIRECTIONS = ("down", "up")  # down: server -> client, up: client -> server
EVALUATION_PREFIXES = ("val_", "test_")  # what: val_weights, val_metrics, test_weights, test_metrics
log = logging.getLogger(__name__)


def read_ledger(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The ledger's rows (``round`` and ``bytes`` as int); a torn last line from a killed writer is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    rows: list[dict[str, Any]] = []
    with open(path, newline="") as fh:
        for raw in csv.DictReader(fh):
            try:
                row = {"round": int(raw["round"]), "client": raw["client"], "direction": raw["direction"], "what": raw["what"], "bytes": int(raw["bytes"])}
            except (TypeError, ValueError, KeyError):
                log.warning("%s: skipping a malformed ledger row %s", path, raw)
                continue
            if row["direction"] in DIRECTIONS:
                rows.append(row)
    return rows


class Ledger:
    """Append-only CSV ledger at ``path`` (``round,client,direction,what,bytes``), flushed after every row.

    A ledger file belongs to one rounds run. Before its first round the rounds loop calls
    :meth:`truncate_after` with the last completed round (0 for a fresh run), so rows of rounds that a
    resumed run replays are never duplicated.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def record(self, round: int, client: str, direction: str, what: str, nbytes: int) -> None:
        """Append one row: ``client`` sent (``up``) or received (``down``) ``nbytes`` bytes of ``what`` in ``round``."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists() or self.path.stat().st_size == 0
        with open(self.path, "a", newline="") as fh:
            writer = csv.writer(fh)
            if new:
                writer.writerow(FIELDS)
            writer.writerow((int(round), client, direction, what, int(nbytes)))
            fh.flush()

    def ensure(self) -> None:
        """Create the file with just its header if it does not exist (a run that moves no payload)."""
        if not self.path.exists():
            with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as fh:
                csv.writer(fh).writerow(FIELDS)   # the csv module's line ending, as record() writes it

    def rows(self) -> list[dict[str, Any]]:
        """All rows recorded so far."""
        return read_ledger(self.path)

    def truncate_after(self, round: int) -> None:
        """Drop rows of rounds after ``round`` (and torn lines), rewriting the file atomically; ``-1`` empties it."""
        if not self.path.exists():
            return
        rows = read_ledger(self.path)
        kept = [r for r in rows if r["round"] <= round]
        with open(self.path, newline="") as fh:
            lines = sum(1 for _ in fh) - 1
        if len(kept) == lines:
            return
        log.info("%s: dropping %d ledger rows after round %d (they will be replayed)", self.path, lines - len(kept), round)
        with atomic_path(self.path, overwrite=True) as tmp:
            with open(tmp, "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=FIELDS)
                writer.writeheader()
                writer.writerows(kept)


def is_evaluation(what: str) -> bool:
    """Whether a ledger row is evaluation traffic (``val_weights``, ``test_metrics``...) rather than training or deployment."""
    return what.startswith(EVALUATION_PREFIXES)


def ledger_totals(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Bytes per direction and per client, training and deployment traffic apart from evaluation traffic.

    Returns:
        ``{"total": n, "down": n, "up": n, "clients": {client: {"down": n, "up": n, "total": n}}, "rows": n,
        "exchanges": n, "evaluation": {"down": n, "up": n, "total": n}}``: ``total``, ``down``, ``up`` and
        ``clients`` count what a method needs to train and deploy (the paper's communication cost);
        ``exchanges`` is the number of distinct (round, client) pairs that moved such a payload;
        ``evaluation`` is what federated validation and testing moved on top.
    """
    totals: dict[str, int] = dict.fromkeys(DIRECTIONS, 0)
    evaluation: dict[str, int] = dict.fromkeys((*DIRECTIONS, "total"), 0)
    clients: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys((*DIRECTIONS, "total"), 0))
    exchanges: set[tuple[int, str]] = set()
    rows = read_ledger(path)
    for row in rows:
        if is_evaluation(row["what"]):
            evaluation[row["direction"]] += row["bytes"]
            evaluation["total"] += row["bytes"]
            continue
        totals[row["direction"]] += row["bytes"]
        clients[row["client"]][row["direction"]] += row["bytes"]
        clients[row["client"]]["total"] += row["bytes"]
        exchanges.add((row["round"], row["client"]))
    return {
        "total": sum(totals.values()), **totals, "clients": dict(sorted(clients.items())), "rows": len(rows),
        "exchanges": len(exchanges), "evaluation": evaluation,
    }
