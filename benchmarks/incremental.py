"""Benchmark: the cost of a client joining, and Prefect's overhead per stage, on the embedded default.

Prints one JSON object (and writes it to ``--out``). What it does, on git clones of the project under
``--work`` (the user's checkout is never touched), all reporting to one Prefect server started here:

1. ``four/``: ``dvc repro`` from scratch with the committed 4 clients (``scratch_4_s``).
2. ``four/``: ``python -m dsfed_pipeline.flows.ui`` serves the deployments; ``dsfed clients add site_e --like site_c
   --set site=site_e`` emits ``dsfed.client.joined``; the ``redistill`` run it triggers is timed from the
   command's start to the run's end (``incremental_s``; ``trigger_latency_s``: command start to run start).
3. ``five/``: a fresh clone with site_e added the same way, ``dvc repro`` from scratch (``scratch_5_s``).

``ratio`` = incremental_s / scratch_5_s. Per stage of the from-scratch 5-client run (from the Prefect API
and ``artifacts/timings.jsonl``): ``process_s`` (the stage's python process), ``flow_run_s`` (its flow
run, start to end), ``task_s`` (its tasks: the stage's own work), ``prefect_overhead_s`` = flow_run_s -
task_s, and ``startup_s`` = process_s - flow_run_s (imports, settings, the flow run's creation).

``--four CHECKOUT`` replaces step 1 by a copy of a checkout already built (moved to this commit; refused unless
``dvc status`` is clean there); ``scratch_4_s`` is then null (it is not in the ratio). ``--scope dsfedmed`` runs
step 3 without the SAM-Fed stages (empty ``samfed`` mappings in five/). A join reruns none of them (the run stops
if a ``samfed*`` stage is among the join's), so that is the strict ratio: the join against only the stages it
could have had to rerun.

    python benchmarks/incremental.py --work /tmp/dsfed-incremental --out docs/benchmarks/incremental-cpu.json

About 100 min on 2 CPU cores for the whole default; with ``--four`` and ``--scope dsfedmed`` 46 min (2026-12-06,
the machine in a slow phase). ``--keep`` leaves the clones and the server's database (``<work>/prefect``:
``prefect server start`` on it shows every run, e.g. for ``scripts/ui_screenshot.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from emit_json import emit  # noqa: E402  (this folder, first on sys.path)

from dsfed.orchestration.prefect_server import client_env, start_server, stop_server  # noqa: E402
from dsfed.timings import latest_stage_times  # noqa: E402

JOIN = ["--like", "site_c", "--set", "site=site_e"]


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed in {cwd}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return seconds, done.stdout + done.stderr


def _clone(work: Path, name: str, env: dict[str, str]) -> Path:
    root = work / name
    subprocess.run(["git", "clone", "-q", str(REPO), str(root)], check=True, env=env)
    return root


def _copy_built(source: Path, work: Path, name: str, env: dict[str, str]) -> Path:
    """A copy of ``source``, a built checkout (any commit), moved to this commit: refused unless its pipeline is
    then up to date (``dvc status`` clean), i.e. the commits between changed no stage."""
    root = work / name
    subprocess.run(["cp", "-a", str(source), str(root)], check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run(["git", "fetch", "-q", str(REPO), head], cwd=root, check=True, env=env)
    subprocess.run(["git", "checkout", "-q", "--detach", head], cwd=root, check=True, env=env)
    if subprocess.run([sys.executable, "-m", "dvc", "status", "--quiet"], cwd=root, env=env).returncode != 0:
        raise SystemExit(f"--four {source}: its pipeline is not up to date at {head[:8]} (`dvc status` there)")
    return root


def _without_samfed(doc: Any) -> None:
    """``samfed: {public: {}, clients: {}, architectures: {}, variants: {}}`` (as scenarios/skin): no SAM-Fed
    stage. An edit for :func:`dsfed.clients.edit_params`."""
    from ruamel.yaml.comments import CommentedMap

    empty = CommentedMap((section, {}) for section in ("public", "clients", "architectures", "variants"))
    empty.fa.set_flow_style()
    doc["samfed"] = empty


async def _read(what: str, **filters: Any) -> list[Any]:
    from prefect import get_client

    async with get_client() as client:
        return await getattr(client, what)(**filters)


def _api(api: str, what: str, **filters: Any) -> list[Any]:
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api, PREFECT_API_AUTH_STRING: os.environ.get("PREFECT_API_AUTH_STRING")}):
        return asyncio.run(_read(what, **filters))


def _stage_name(flow_name: str, parameters: dict[str, Any]) -> str:
    flow_name = flow_name.replace("-", "_")  # flow "server-sam" is stage server_sam (dsfed_pipeline/flows/_cli.stage_of)
    key = parameters.get("client") or parameters.get("method")
    return f"{flow_name}@{key}" if key and flow_name not in ("redistill", "pipeline") else flow_name


def per_stage(api: str, since: datetime, until: datetime, artifacts: Path) -> list[dict[str, Any]]:
    """One row per stage flow run that started in [since, until]."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterStartTime,
        TaskRunFilter,
        TaskRunFilterFlowRunId,
    )

    flows = {f.id: f.name for f in _api(api, "read_flows")}
    runs = _api(api, "read_flow_runs", flow_run_filter=FlowRunFilter(
        start_time=FlowRunFilterStartTime(after_=since, before_=until)), limit=200)
    process = latest_stage_times(artifacts)
    rows = []
    for run in sorted(runs, key=lambda r: r.start_time):
        name = flows[run.flow_id]
        if name in ("pipeline", "redistill") or run.end_time is None:
            continue
        stage = _stage_name(name, run.parameters)
        tasks = _api(api, "read_task_runs", task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[run.id])))
        task_s = sum(t.total_run_time.total_seconds() for t in tasks)
        flow_s = (run.end_time - run.start_time).total_seconds()
        proc_s = process.get(stage, {}).get("process_s")
        rows.append({"stage": stage, "process_s": round(proc_s, 2) if proc_s else None, "flow_run_s": round(flow_s, 2),
                     "task_s": round(task_s, 2), "prefect_overhead_s": round(flow_s - task_s, 2),
                     "startup_s": round(proc_s - flow_s, 2) if proc_s else None})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/dsfed-incremental"))
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the clones and the Prefect database")
    parser.add_argument("--four", type=Path, default=None,
                        help="a built checkout (up to date at this commit) to copy instead of the 4-client run from scratch")
    parser.add_argument("--scope", choices=("all", "dsfedmed"), default="all",
                        help="the 5-client run from scratch: every stage, or DSFedMed's only (no SAM-Fed stage)")
    args = parser.parse_args()
    if args.work.exists():
        raise SystemExit(f"{args.work}: exists; give another --work (nothing is overwritten)")
    args.work.mkdir(parents=True)
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONDONTWRITEBYTECODE": "1",
           "PREFECT_HOME": str(args.work / "prefect")}
    server, api = start_server(home=args.work / "prefect", log=args.work / "server.log")
    env |= client_env(api, args.work / "prefect")   # the server is closed: its auth string goes with every request
    os.environ["PREFECT_API_AUTH_STRING"] = env["PREFECT_API_AUTH_STRING"]
    py = sys.executable
    try:
        scratch_4: float | None = None
        if args.four is not None:
            four = _copy_built(args.four.resolve(), args.work, "four", env)
        else:
            four = _clone(args.work, "four", env)
            scratch_4, _ = _run([py, "-m", "dvc", "repro"], four, env)
            print(f"from scratch, 4 clients: {scratch_4:.1f} s", file=sys.stderr)

        port = api.split(":")[-1].split("/")[0]
        ui = subprocess.Popen([py, "-m", "dsfed_pipeline.flows.ui", "--port", port, "--root", "."], cwd=four, env=env,
                              stdout=open(args.work / "ui.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True)
        try:
            while not any(d.name == "redistill" for d in _api(api, "read_deployments")):
                if ui.poll() is not None:
                    raise SystemExit(f"dsfed_pipeline.flows.ui exited:\n{(args.work / 'ui.log').read_text()[-3000:]}")
                time.sleep(1)
            t0, started = time.perf_counter(), datetime.now().astimezone()
            _run([py, "-m", "dsfed", "clients", "add", "site_e", *JOIN], four, env)
            while True:
                runs = [r for r in _api(api, "read_flow_runs") if r.parameters.get("client") == "site_e"
                        and r.deployment_id is not None]
                if runs and runs[0].state is not None and runs[0].state.is_final():
                    break
                time.sleep(2)
            incremental = time.perf_counter() - t0
        finally:
            stop_server(ui)  # the serve process group: SIGTERM, then SIGKILL after 30 s
        run = runs[0]
        if not run.state.is_completed():
            raise SystemExit(f"the redistill run ended {run.state.type}: {(args.work / 'ui.log').read_text()[-3000:]}")
        stage_rows = per_stage(api, started, run.end_time, four / "artifacts")
        ran = [row["stage"] for row in stage_rows]
        warm = json.loads((four / "artifacts/distill/metrics.json").read_text()).get("warm_start_from")
        print(f"incremental (event to redistill done): {incremental:.1f} s; ran {ran}", file=sys.stderr)
        if args.scope == "dsfedmed" and any(stage.startswith("samfed") for stage in ran):
            raise SystemExit(f"--scope dsfedmed: the join reran SAM-Fed stages ({ran}); the strict ratio does not apply")

        five = _clone(args.work, "five", env)
        from dsfed.clients import add_client, edit_params
        from dsfed.config import load_params

        like = load_params(five / "params.yaml").clients["site_c"].source.model_dump(mode="json", exclude_defaults=True)
        add_client(five / "params.yaml", "site_e", {**like, "kind": "phantom", "site": "site_e"})
        if args.scope == "dsfedmed":
            edit_params(five / "params.yaml", _without_samfed)
        since = datetime.now().astimezone()
        scratch_5, _ = _run([py, "-m", "dvc", "repro"], five, env)
        rows = per_stage(api, since, datetime.now().astimezone(), five / "artifacts")
        print(f"from scratch, 5 clients: {scratch_5:.1f} s", file=sys.stderr)
        overhead = [r["prefect_overhead_s"] for r in rows]
        startup = [r["startup_s"] for r in rows if r["startup_s"] is not None]
        eval4 = json.loads((four / "artifacts/eval/metrics.json").read_text())
        eval5 = json.loads((five / "artifacts/eval/metrics.json").read_text())
        result = {
            "benchmark": "incremental", "machine": f"{platform.machine()} {os.cpu_count()} cpus",
            "joined": "site_e", "scope": args.scope, "four_from": str(args.four) if args.four else None,
            "scratch_4_s": round(scratch_4, 1) if scratch_4 is not None else None, "incremental_s": round(incremental, 1),
            "incremental_run_s": round((run.end_time - run.start_time).total_seconds(), 1),
            "trigger_latency_s": round((run.start_time - started).total_seconds(), 1),
            "scratch_5_s": round(scratch_5, 1), "ratio": round(incremental / scratch_5, 3),
            "incremental_stages": ran, "incremental_stage_rows": stage_rows, "distill_warm_start_from": warm,
            "site_e_dice": {f"{model}_{which}": ev["models"][model]["clients"]["site_e"]["dice"]
                            for model in ("fedtinysam", "dsfedmed_tiny") for which, ev in (("incremental", eval4), ("from_scratch", eval5))},
            "source_dice": {"fedtinysam_incremental": eval4["models"]["fedtinysam"]["source_mean"]["dice"],
                            "dsfedmed_tiny_incremental": eval4["models"]["dsfedmed_tiny"]["source_mean"]["dice"],
                            "dsfedmed_tiny_from_scratch": eval5["models"]["dsfedmed_tiny"]["source_mean"]["dice"]},
            "prefect_overhead_s": {"mean": round(statistics.mean(overhead), 2), "median": round(statistics.median(overhead), 2),
                                   "max": round(max(overhead), 2)},
            "startup_s": {"mean": round(statistics.mean(startup), 2), "median": round(statistics.median(startup), 2)},
            "dvc_and_gaps_s": round(scratch_5 - sum(r["process_s"] or 0 for r in rows), 1),
            "stages_5": rows,
        }
    finally:
        stop_server(server)
        if not args.keep:
            shutil.rmtree(args.work, ignore_errors=True)
    emit(result, args.out)


if __name__ == "__main__":
    main()
