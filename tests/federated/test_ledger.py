"""Payload ledger: exact safetensors sizes, totals, no duplicated rows after a resume."""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors.torch import save

from dsfed.federated import FedAvg, Ledger, RoundsConfig, ledger_totals, run_rounds
from tests.federated.toy import federation_of, initial_weights, toy_clients


def test_rows_and_totals(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "sub" / "ledger.csv")
    ledger.record(1, "a", "down", "global_weights", 100)
    ledger.record(1, "a", "up", "update", 90)
    ledger.record(1, "b", "down", "global_weights", 100)
    ledger.record(2, "b", "up", "update", 80)
    text = (tmp_path / "sub" / "ledger.csv").read_text().splitlines()
    assert text[0] == "round,client,direction,what,bytes" and len(text) == 5 and text[1] == "1,a,down,global_weights,100"
    totals = ledger_totals(ledger.path)
    assert totals == {
        "total": 370, "down": 200, "up": 170, "rows": 4,
        "clients": {"a": {"down": 100, "up": 90, "total": 190}, "b": {"down": 100, "up": 80, "total": 180}},
        "exchanges": 3, "evaluation": {"down": 0, "up": 0, "total": 0},
    }
    with pytest.raises(ValueError, match="direction"):
        ledger.record(1, "a", "sideways", "x", 1)


def test_truncate_after_drops_replayed_rounds_and_torn_lines(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.csv")
    for r in (1, 2, 3):
        ledger.record(r, "a", "down", "global_weights", 10 * r)
    with open(ledger.path, "a") as fh:
        fh.write("3,a,do")  # a writer killed mid-row
    ledger.truncate_after(2)
    assert [row["round"] for row in ledger.rows()] == [1, 2]
    ledger.record(3, "a", "down", "global_weights", 30)
    assert [row["bytes"] for row in ledger.rows()] == [10, 20, 30]
    ledger.truncate_after(0)
    assert ledger.rows() == [] and ledger.path.read_text().startswith("round,")


def test_bytes_are_the_exact_safetensors_size_of_every_payload(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.csv")
    ledger.record(9, "stale", "up", "update", 1)  # a previous run's row: a fresh run starts the ledger over
    run_rounds(federation_of(toy_clients(2), ledger=ledger), FedAvg(), initial_weights(), RoundsConfig(rounds=2), progress=False)
    size = len(save({k: v.contiguous() for k, v in initial_weights().items()}))
    rows = ledger.rows()
    assert len(rows) == 2 * 2 * 2 and {r["bytes"] for r in rows} == {size}
    assert [(r["round"], r["client"], r["direction"], r["what"]) for r in rows[:4]] == [
        (1, "site_a", "down", "global_weights"), (1, "site_b", "down", "global_weights"), (1, "site_a", "up", "update"), (1, "site_b", "up", "update"),
    ]
    totals = ledger_totals(ledger.path)
    assert totals["down"] == totals["up"] == 4 * size and totals["clients"]["site_a"]["total"] == 4 * size
    assert size > sum(v.numel() * v.element_size() for v in initial_weights().values())  # header included


def test_evaluation_traffic_is_counted_apart_and_per_client_bytes_follow_participation(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.csv")
    for rnd, clients in ((1, "ab"), (2, "a"), (3, "b")):  # fraction < 1: not every client trains every round
        for c in clients:
            ledger.record(rnd, c, "down", "global_weights", 100)
            ledger.record(rnd, c, "up", "update", 100)
            ledger.record(rnd, c, "down", "val_weights", 100)
    totals = ledger_totals(ledger.path)
    assert totals["total"] == 800 and totals["exchanges"] == 4 and totals["evaluation"] == {"down": 400, "up": 0, "total": 400}


def test_a_ledger_created_empty_first_has_the_same_bytes(tmp_path: Path) -> None:
    """The Flower ServerApp creates the ledger before the first payload (``ensure``), the in-process engine with
    it: the whole-pipeline comparison found the header's line ending differed (3690 vs 3689 bytes)."""
    first, direct = Ledger(tmp_path / "a.csv"), Ledger(tmp_path / "b.csv")
    first.ensure()
    for ledger in (first, direct):
        ledger.record(1, "site_a", "down", "global_weights", 123)
        ledger.record(1, "site_a", "up", "update", 123)
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
