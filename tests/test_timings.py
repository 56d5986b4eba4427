"""Per-stage timing records (``dsfed.timings``) and the stage names the flow wrapper derives."""

from __future__ import annotations

from pathlib import Path

from dsfed.timings import TIMINGS, latest_stage_times, record_stage_time
from dsfed_pipeline.flows._cli import stage_of


def test_latest_successful_record_per_stage(tmp_path: Path) -> None:
    record_stage_time(tmp_path, "prepare@a", 1.0, 5.0, ok=True)
    record_stage_time(tmp_path, "prepare@a", 2.0, 6.0, ok=True)
    record_stage_time(tmp_path, "prepare@a", 9.0, 9.5, ok=False)  # a failed run does not replace it
    record_stage_time(tmp_path, "distill", 3.0, 14.0, ok=True)
    with open(tmp_path / TIMINGS, "a") as fh:
        fh.write('{"stage": "torn')  # a line cut short by a killed process
    times = latest_stage_times(tmp_path)
    assert set(times) == {"prepare@a", "distill"}
    assert (times["prepare@a"]["wall_s"], times["prepare@a"]["process_s"]) == (2.0, 6.0)
    assert latest_stage_times(tmp_path / "nowhere") == {}


def test_stage_names_follow_dvc() -> None:
    class Flow:
        def __init__(self, name: str) -> None:
            self.name = name

    assert stage_of(Flow("prepare"), ("site_a", "params.yaml", "out", False)) == ("prepare@site_a", "out")
    assert stage_of(Flow("server-sam"), ("params.yaml", "artifacts")) == ("server_sam", "artifacts")
    assert stage_of(Flow("report"), ("p.yml",)) == ("report", "artifacts")
