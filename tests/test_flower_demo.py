"""``benchmarks/flower_demo.py``: each stage's in-process and Flower wall time paired from one project's
``artifacts/timings.jsonl``, and a run split over sessions merged with the earlier part's rows."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))   # flower_demo imports emit_json from its folder
spec = importlib.util.spec_from_file_location("flower_demo", REPO / "benchmarks/flower_demo.py")
assert spec is not None and spec.loader is not None
flower_demo = importlib.util.module_from_spec(spec)
spec.loader.exec_module(flower_demo)


def _project(tmp_path: Path, records: list[tuple[str, str, float]], done: list[str]) -> Path:
    (tmp_path / ".flower/before").mkdir(parents=True)
    (tmp_path / ".flower/before/started").write_text("2026-12-05T12:00:00+00:00\n")
    (tmp_path / ".flower/before/params.yaml").write_text(yaml.safe_dump(
        {"federated": {"rounds": 8, "methods": {"fedunet": {"model": "unet"}, "pooled": {"strategy": "centralized"}}},
         "samfed": {"rounds": 4, "variants": {"samfed_nn": {"model": "nnunet"}}}}))
    (tmp_path / ".flower/whole-done.txt").write_text("".join(f"{s}\n" for s in done))
    (tmp_path / "artifacts").mkdir()
    lines = [json.dumps({"stage": s, "at": at, "wall_s": w, "ok": True}) for s, at, w in records]
    (tmp_path / "artifacts/timings.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_stages_pair_the_last_in_process_time_with_the_first_flower_time(tmp_path: Path) -> None:
    project = _project(tmp_path, [
        ("federated@fedunet", "2026-12-05T10:00:00+00:00", 50.0),
        ("federated@fedunet", "2026-12-05T11:00:00+00:00", 40.0),     # the last before the Flower run
        ("federated@fedunet", "2026-12-05T12:10:00+00:00", 480.0),    # the Flower run
        ("federated@fedunet", "2026-12-05T13:00:00+00:00", 999.0),    # a later rerun: not the Flower run's
        ("federated@pooled", "2026-12-05T11:00:00+00:00", 60.0),
        ("federated@pooled", "2026-12-05T12:20:00+00:00", 66.0),
        ("prepare@a", "2026-12-05T11:00:00+00:00", 6.0),              # listed as done (taken as run): no Flower time
    ], done=["prepare@a", "federated@fedunet", "federated@pooled"])
    result = flower_demo.pair_stage_times(project)
    rows = {r["stage"]: r for r in result["stages"]}
    assert set(rows) == {"federated@fedunet", "federated@pooled"}
    assert rows["federated@fedunet"] == {"stage": "federated@fedunet", "inprocess_s": 40.0, "flower_s": 480.0, "ratio": 12.0,
                                         "rounds": 8, "extra_s_per_round": 55.0}
    assert "rounds" not in rows["federated@pooled"]   # centralized: no exchange
    assert result["stages_listed_done"] == 3 and result["ratio_total"] == round(546 / 100, 2)


def test_a_later_part_replaces_the_stages_it_timed_and_keeps_the_others(tmp_path: Path) -> None:
    project = _project(tmp_path, [("samfed@samfed_nn", "2026-12-05T11:00:00+00:00", 100.0),
                                  ("samfed@samfed_nn", "2026-12-05T12:30:00+00:00", 900.0)], done=["samfed@samfed_nn"])
    old = {"flower_run_started": "2026-12-04T22:30:14+00:00", "stages": [
        {"stage": "prepare@a", "inprocess_s": 6.0, "flower_s": 6.0, "ratio": 1.0},
        {"stage": "samfed@samfed_nn", "inprocess_s": 1.0, "flower_s": 1.0, "ratio": 1.0}]}
    merged = flower_demo.merge(flower_demo.pair_stage_times(project), old)
    assert [r["stage"] for r in merged["stages"]] == ["prepare@a", "samfed@samfed_nn"]
    assert merged["stages"][1]["flower_s"] == 900.0 and merged["stages"][1]["extra_s_per_round"] == 200.0
    assert merged["flower_runs_started"] == ["2026-12-04T22:30:14+00:00", "2026-12-05T12:00:00+00:00"]
    assert (merged["inprocess_s_total"], merged["flower_s_total"], merged["ratio_total"]) == (106.0, 906.0, 8.55)
    assert merged["stages_compared"] == 2
