"""The one round checkpointer (federated rounds and distillation): atomic rounds, latest, keep-N, identity."""

from __future__ import annotations

from pathlib import Path

import pytest

from dsfed.provenance import FEDERATED_CODE, code_hash
from dsfed.round_checkpoints import CheckpointError, RoundCheckpointer


def _write(text: str):
    def write(folder: Path) -> None:
        (folder / "state.txt").write_text(text)

    return write


def test_rounds_latest_keep_and_a_failed_write_leaves_the_last_good_round(tmp_path: Path) -> None:
    ck = RoundCheckpointer(tmp_path / "ck", run="r1", schema=7, keep=2)
    assert ck.latest() is None
    for rnd in (1, 2, 3):
        ck.save(rnd, _write(f"state {rnd}"), {"history": list(range(rnd))})
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["latest", "round-0002", "round-0003"]
    found = ck.latest()
    assert found.round == 3 and found.meta["history"] == [0, 1, 2] and (found.path / "state.txt").read_text() == "state 3"

    def broken(folder: Path) -> None:
        (folder / "half.txt").write_text("half")
        raise OSError("no space left on device")

    with pytest.raises(OSError):
        ck.save(4, broken)
    assert ck.latest().round == 3  # nothing half-written is ever named latest
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["latest", "round-0002", "round-0003"]


def test_another_run_or_schema_is_refused_with_one_line(tmp_path: Path) -> None:
    RoundCheckpointer(tmp_path, run="r1", schema=1).save(1, _write("x"))
    with pytest.raises(CheckpointError, match="config changed") as info:
        RoundCheckpointer(tmp_path, run="r2", schema=1).latest()
    assert "\n" not in str(info.value) and "delete" in str(info.value)
    with pytest.raises(CheckpointError, match="schema 1 \\(expected 2\\)"):
        RoundCheckpointer(tmp_path, run="r1", schema=2).latest()
    assert RoundCheckpointer(tmp_path, run="r2", schema=1).latest(check_run=False).round == 1


def test_the_resume_identity_covers_the_code_the_numbers_depend_on_only() -> None:
    assert code_hash(*FEDERATED_CODE) != code_hash("report") and code_hash(*FEDERATED_CODE) == code_hash(*FEDERATED_CODE)
    assert code_hash("federated") != code_hash("federated", "models")
