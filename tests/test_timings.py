"""Per-stage timing records (``dsfed.timings``) and the stage names the flow wrapper derives."""

from __future__ import annotations

from pathlib import Path

from dsfed.report.timings_page import write_timings_page
from dsfed.timings import TIMINGS, latest_measured, latest_stage_times, record_measured, record_stage_time
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


def test_measurements_are_kept_apart_from_stage_times_and_shown_on_the_timing_page(tmp_path: Path) -> None:
    record_stage_time(tmp_path, "evaluate", 4.0, 9.0, ok=True)
    record_measured(tmp_path, "evaluate", {"device": "cpu", "inference_ms_per_image": {"fedunet": 2.5}})
    record_measured(tmp_path, "evaluate", {"device": "cpu", "inference_ms_per_image": {"fedunet": 3.25}})   # the newest wins
    record_measured(tmp_path, "synthesize@a", {"seconds": 12.5, "images_per_s": 0.8})
    assert set(latest_stage_times(tmp_path)) == {"evaluate"}   # a measurement is not a stage run
    measured = latest_measured(tmp_path)
    assert measured["evaluate"]["inference_ms_per_image"] == {"fedunet": 3.25} and measured["synthesize@a"]["seconds"] == 12.5
    page = write_timings_page(tmp_path).read_text()
    assert "fedunet" in page and "3.2" in page and "images_per_s 0.80" in page and "evaluate" in page
    assert "No stage has recorded" in write_timings_page(tmp_path / "empty").read_text()


def test_an_unwritable_timings_log_never_fails_the_stage(tmp_path: Path) -> None:
    (tmp_path / TIMINGS).mkdir()   # a folder where the log should be: the append fails
    record_measured(tmp_path, "distill", {"wall_s": 1.0})
    assert latest_measured(tmp_path) == {}
