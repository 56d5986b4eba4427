"""Rerun the pipeline's client-facing stages (or the whole pipeline) on Flower against local nodes and compare
every output with the in-process run's.

For the project in the current directory (stores not yet prepared are prepared first, as each hospital does
before its node starts): creates certificates and node keys
(``.flower/certs``), starts a SuperLink with TLS and node authentication and one node per client (the
pipeline's hospitals and SAM-Fed's; separate processes on 127.0.0.1, each over its own store), registers the
nodes' keys, sets ``federated.engine: flower`` in params.yaml (restored byte for byte at the end), and runs

- by default ``dsfed repro --force --single-item --no-run-cache --glob`` the stages that reach the clients
  (``controlnet@*``, ``quality@*``, ``federated@*``, ``server_sam``, ``distill``, ``samfed@*``): the clients
  train their ControlNets, audit their synthetic sets and train the federated methods and SAM-Fed's variants
  on their nodes, DSFedMed's server stages validate on the nodes and deliver the student to them (the audit's
  grid of real images stays at the nodes: the server's ``grid.png`` differs by design);
- with ``--whole``, every stage of the pipeline, as ``dvc repro`` runs it on a fresh checkout, with the Flower
  engine: one ``dsfed repro --force --single-item --no-run-cache STAGE`` per stage, in the order ``dvc repro``
  runs them, each listed in ``.flower/whole-done.txt`` once it ran; ``--whole --resume`` goes on after the
  last stage listed (a run of two hours can be stopped and taken up again: the in-process lock, params and
  uncached outputs are kept in ``.flower/before/`` from the first start); ``--whole --only PATTERN...`` forces
  only the stages matching the patterns (fnmatch, in ``dvc repro``'s order) and takes the others as run, as
  after an earlier session's run whose Flower outputs equalled the in-process ones byte for byte (a whole run
  split over sessions: the later stages get the same inputs); the forced stages and those upstream of them
  must be up to date in process first (``dvc status``).

It then compares every output whose hash changed with its in-process version, by content
(``scripts/compare_outputs.py``: the old version from the DVC cache, or from a snapshot taken before the run
for ``cache: false`` outputs such as metrics and ledgers): equal weights with other metadata, or JSON equal
but for wall-clock figures and ``resumed_from``, count as equal and are listed. ``checkpoints/`` and
``client-state/`` and SAM-Fed's ``client-cache/`` are left out: the checkpoints' folder is named by the run's config
hash, which includes the federated code's hash, and on Flower the clients' state and cached teacher predictions
are at the nodes (the server's folder holds a README saying so).

    python scripts/repro_on_flower.py [--stages 'controlnet@*' 'federated@*' ...] [--whole [--resume | --only PATTERN...]] [--keep-lock]

Logs of the SuperLink and the nodes go to ``.flower/logs/``. ``--keep-lock`` keeps the new dvc.lock
(default: the old one is put back when no output differs in content, so only the engine differs).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

from dsfed.federated.flower.ports import free_ports, wait_port

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_outputs import DIFFERS, compare_locks, snapshot_uncached  # noqa: E402

NODE_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}
"""The nodes' environment on top of this one. Eight nodes share this machine's cores: a ClientApp's OpenMP
threads that wait for work sleep instead of spinning (libgomp's default spin starves the other nodes'
ClientApps: 50 % system time at 4 busy nodes on 2 cores). The thread count, and so every result, is unchanged."""


def _dsfed(*args: str, log: Path | None = None, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    out = log.open("wb") if log else None
    return subprocess.Popen([sys.executable, "-m", "dsfed", *args], stdout=out, stderr=subprocess.STDOUT if out else None,
                            env={**os.environ, **env} if env else None)


def _stage_order(project: Path) -> list[str]:
    """Every stage, in the order ``dvc repro`` runs them (its dry run of a forced repro)."""
    dry = subprocess.run([sys.executable, "-m", "dvc", "repro", "--dry", "--force"], cwd=project, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=True).stdout
    return re.findall(r"Running stage '([^']+)'", dry)


CHECKPOINTS = {"federated": "artifacts/federated/{}/checkpoints", "distill": "artifacts/distill/checkpoints",
               "samfed": "artifacts/samfed/variants/{}/checkpoints"}
"""Stage kind -> the checkpoint folder a forced stage of it would resume from ({}: the stage's item)."""


def _checkpoints(project: Path, stage: str) -> list[Path]:
    """The checkpoint folders a forced ``stage`` would resume from: removed first, for a fresh run."""
    kind, _, item = stage.partition("@")
    return [project / CHECKPOINTS[kind].format(item)] if kind in CHECKPOINTS else []


def _taken_as_run(project: Path, order: list[str], only: list[str]) -> list[str]:
    """The stages ``--only`` leaves out, taken as run. The forced stages and every stage upstream of them must
    be up to date in process (``dvc status``: the in-process outputs are what the Flower ones are compared
    with, and the inputs they get), else one line and exit."""
    forced = [s for s in order if any(fnmatch.fnmatchcase(s, p) for p in only)]
    if not forced:
        sys.exit(f"--only: no stage matches {' '.join(only)}")
    status = subprocess.run([sys.executable, "-m", "dvc", "status", "--json", *forced], cwd=project, text=True,
                            stdout=subprocess.PIPE, check=True).stdout
    stale = sorted(json.loads(status or "{}"))
    if stale:
        sys.exit(f"--only: {', '.join(stale)} not up to date in process: run `dsfed repro` of them first")
    return [s for s in order if s not in forced]


def _run_whole(project: Path, done_file: Path, env: dict[str, str]) -> None:
    """Force every stage in turn on Flower, skipping those ``done_file`` lists; each is listed once it ran."""
    done = set(done_file.read_text().split()) if done_file.is_file() else set()
    order = _stage_order(project)
    for i, stage in enumerate(order, 1):
        if stage in done:
            continue
        for folder in _checkpoints(project, stage):
            shutil.rmtree(folder, ignore_errors=True)
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "dsfed", "repro", "--force", "--single-item", "--no-run-cache", stage], check=True, env=env)
        with done_file.open("a") as f:
            f.write(f"{stage}\n")
        print(f"[{i}/{len(order)}] {stage} on Flower: {time.perf_counter() - started:.0f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stages", nargs="+", default=["controlnet@*", "quality@*", "federated@*", "server_sam", "distill", "samfed@*"],
                        help="the stages to force on Flower (dvc repro --glob patterns)")
    parser.add_argument("--whole", action="store_true", help="rerun every stage of the pipeline (dsfed repro --force)")
    parser.add_argument("--resume", action="store_true", help="with --whole: go on after the stages .flower/whole-done.txt lists")
    parser.add_argument("--only", nargs="+", metavar="PATTERN",
                        help="with --whole: force only these stages (fnmatch); they and their upstream up to date in process first")
    parser.add_argument("--keep-lock", action="store_true", help="keep the dvc.lock the Flower run wrote")
    args = parser.parse_args()
    project = Path.cwd()
    params_path = project / "params.yaml"
    before = project / ".flower" / "before"   # the in-process run's lock, params and uncached outputs
    snapshot = before / "snapshot"
    skip = ("/checkpoints", "/client-state", "/client-cache")   # run folders; what the clients keep: at the nodes on Flower
    done_file = project / ".flower" / "whole-done.txt"
    if args.resume and not (args.whole and (before / "dvc.lock").is_file()):
        parser.error("--resume goes on with an earlier --whole run: none was started here")
    if args.only and (args.resume or not args.whole):
        parser.error("--only goes with --whole, not with --resume")
    taken = _taken_as_run(project, _stage_order(project), args.only) if args.only else None   # checked before before/ is reset
    if not args.resume:
        shutil.rmtree(before, ignore_errors=True)
        done_file.unlink(missing_ok=True)
        before.mkdir(parents=True)
        (before / "started").write_text(datetime.now(timezone.utc).isoformat(timespec="seconds") + "\n")   # benchmarks/flower_demo.py
        shutil.copy2(project / "params.yaml", before / "params.yaml")
        shutil.copy2(project / "dvc.lock", before / "dvc.lock")
        snapshot_uncached(project, yaml.safe_load((before / "dvc.lock").read_bytes()), snapshot, skip)   # metrics, ledgers: not in the DVC cache
        if taken is not None:
            done_file.write_text("".join(f"{s}\n" for s in taken))
    original_params = (before / "params.yaml").read_bytes()
    lock_before = (before / "dvc.lock").read_bytes()
    raw = yaml.safe_load(original_params)
    stores = {name: project / "artifacts/clients" / name / "data.zarr" for name in raw["clients"]}
    if args.whole or any(p.startswith("samfed") for p in args.stages):
        stores |= {name: project / "artifacts/samfed/clients" / name / "data.zarr" for name in (raw.get("samfed") or {}).get("clients") or {}}
    clients = list(stores)
    missing = [name for name, store in stores.items() if not store.is_dir()]
    if missing:   # a fresh checkout: each hospital prepares its store before its node starts (as in docs/deploy.md)
        print(f"preparing the stores of {', '.join(missing)} first: a node starts over its own store")
        subprocess.run([sys.executable, "-m", "dsfed", "repro", "--glob", "prepare@*", "samfed_prepare@*"], check=True)
    flower = project / ".flower"
    logs = flower / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(flower / "superlink-demo", ignore_errors=True)   # a killed earlier run's registrations and runs
    fleet, control, appio, *node_ports = free_ports(3 + len(clients))
    certs = flower / "certs"
    subprocess.run([sys.executable, "-m", "dsfed", "certs", "create", str(certs), *sum((["--node", c] for c in clients), [])], check=True)
    procs = [_dsfed("server", "start", "--state", str(flower / "superlink-demo"), "--fleet-port", str(fleet), "--control-port", str(control),
                    "--serverappio-port", str(appio), "--certs", str(certs), "--node-auth", log=logs / "superlink.log")]
    started = time.perf_counter()
    try:
        wait_port(control, 120.0)
        for client, port in zip(clients, node_ports, strict=True):
            subprocess.run([sys.executable, "-m", "dsfed", "node", "register", str(certs / f"node_{client}.pub"), "--control", f"127.0.0.1:{control}",
                            "--root-certificates", str(certs / "ca.crt"), "--home", str(flower)], check=True)
            procs.append(_dsfed("node", "start", "--client", client, "--data", str(stores[client]),
                                "--state", str(flower / "nodes" / client), "--superlink", f"127.0.0.1:{fleet}", "--clientappio-port", str(port),
                                "--root-certificates", str(certs / "ca.crt"), "--auth-key", str(certs / f"node_{client}"),
                                log=logs / f"node_{client}.log", env=NODE_ENV))
        raw["federated"]["engine"] = "flower"
        raw["federated"]["flower"] = {"control": f"127.0.0.1:{control}", "root_certificates": str(certs / "ca.crt"), "timeout_s": 900,
                                      "wait_nodes_s": 180}
        params_path.write_text(yaml.safe_dump(raw, sort_keys=False))
        env = {**os.environ}
        if args.whole:
            _run_whole(project, done_file, env)
        else:
            for pattern in (template.format("*") for template in CHECKPOINTS.values()):
                for checkpoints in project.glob(pattern):   # a fresh run, not a resume of the last one
                    shutil.rmtree(checkpoints)
            command = ["--force", "--single-item", "--no-run-cache", "--glob", *args.stages]
            subprocess.run([sys.executable, "-m", "dsfed", "repro", *command], check=True, env=env)
    finally:
        params_path.write_bytes(original_params)
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
    wall = time.perf_counter() - started
    report = compare_locks(project, yaml.safe_load(lock_before), yaml.safe_load((project / "dvc.lock").read_bytes()), skip, snapshot)
    what = "the whole pipeline" if args.whole else " ".join(args.stages)
    print(f"{what} on Flower (TLS, node auth, {len(clients)} nodes): {wall / 60:.1f} min")
    by_design = {p for p in report if p.startswith("artifacts/quality/") and p.endswith("/grid.png")}   # real images: at the nodes
    for path in sorted(by_design):
        print(f"  differs by design: {path} (the audit's grid of real images stays at the node; the server's is a blank)")
    differs = {p: files for p, (verdict, files) in report.items() if verdict == DIFFERS and p not in by_design}
    for path, (verdict, files) in report.items():
        if verdict != DIFFERS and path not in by_design:
            print(f"  equal ({verdict}): {path}  ({'; '.join(files[:4])})")
    if differs:
        print("outputs that differ from the in-process run's:")
        for path, files in differs.items():
            print(f"  {path}: {'; '.join(files[:6])}")
    else:
        print(f"every output equals the in-process run's ({len(report)} changed hash only in metadata or timings)")
        if not args.keep_lock:
            (project / "dvc.lock").write_bytes(lock_before)
    changed = differs
    shutil.rmtree(flower / "superlink-demo", ignore_errors=True)
    sys.exit(1 if changed else 0)


if __name__ == "__main__":
    main()
