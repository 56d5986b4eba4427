"""Rerun the pipeline's client-facing stages on Flower against local nodes and check nothing downstream changes.

For the project in the current directory (its stores already prepared): creates certificates and node keys
(``.flower/certs``), starts a SuperLink with TLS and node authentication and one node per client (the
pipeline's hospitals and SAM-Fed's; separate processes on 127.0.0.1, each over its own store), registers the
nodes' keys, sets ``federated.engine: flower`` in params.yaml (restored byte for byte at the end), and runs
``dsfed repro --force --single-item --no-run-cache --glob 'federated@*' server_sam distill 'samfed@*'``: every
stage that reaches the clients reruns on Flower (the federated methods and SAM-Fed's variants train there,
DSFedMed's server SAM and distillation validate on the nodes and deliver the student to them). It then compares the stages' outputs in ``dvc.lock`` with the in-process run's (the lock before;
a ``metrics.json`` that differs only in ``resumed_from``, how the in-process run went, counts as equal):
the same weights, metrics and ledgers mean every stage downstream, and so the report, gets the same
inputs. ``checkpoints/`` and ``client-state/`` are left out of the comparison: the checkpoints' folder is
named by the run's config hash, which includes the federated code's hash, and on Flower the clients' state
is at the nodes (``client-state/`` holds a note saying so).

    python scripts/repro_on_flower.py [--stages 'federated@*' server_sam distill 'samfed@*'] [--keep-lock]

Logs of the SuperLink and the nodes go to ``.flower/logs/``. ``--keep-lock`` keeps the new dvc.lock
(default: the old one is put back when the outputs are equal, so only the engine differs).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from dsfed.federated.flower.ports import free_ports, wait_port

ENGINE_KEYS = ("engine", "flower")
def _dsfed(*args: str, log: Path | None = None) -> subprocess.Popen[bytes]:
    out = log.open("wb") if log else None
    return subprocess.Popen([sys.executable, "-m", "dsfed", *args], stdout=out, stderr=subprocess.STDOUT if out else None)


def _outs(lock: dict[str, Any]) -> dict[str, dict[str, str]]:
    """stage -> {out path: md5} of a dvc.lock."""
    return {stage: {o["path"]: o.get("md5", "") for o in body.get("outs", [])} for stage, body in lock.get("stages", {}).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stages", nargs="+", default=["federated@*", "server_sam", "distill", "samfed@*"],
                        help="the stages to force on Flower (dvc repro --glob patterns)")
    parser.add_argument("--keep-lock", action="store_true", help="keep the dvc.lock the Flower run wrote")
    args = parser.parse_args()
    project = Path.cwd()
    params_path = project / "params.yaml"
    original_params = params_path.read_bytes()
    lock_before = (project / "dvc.lock").read_bytes()
    raw = yaml.safe_load(original_params)
    # the in-process run's metrics, to tell a real difference from `resumed_from` (how a run went, not what it gave)
    metrics_before = {str(p.relative_to(project)): json.loads(p.read_text()) for p in project.glob("artifacts/federated/*/metrics.json")}
    stores = {name: project / "artifacts/clients" / name / "data.zarr" for name in raw["clients"]}
    if any(p.startswith("samfed") for p in args.stages):
        stores |= {name: project / "artifacts/samfed/clients" / name / "data.zarr" for name in (raw.get("samfed") or {}).get("clients") or {}}
    clients = list(stores)
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
                                log=logs / f"node_{client}.log"))
        raw["federated"]["engine"] = "flower"
        raw["federated"]["flower"] = {"control": f"127.0.0.1:{control}", "root_certificates": str(certs / "ca.crt"), "timeout_s": 900,
                                      "wait_nodes_s": 180}
        params_path.write_text(yaml.safe_dump(raw, sort_keys=False))
        for pattern in ("artifacts/federated/*/checkpoints", "artifacts/distill/checkpoints", "artifacts/samfed/variants/*/checkpoints"):
            for checkpoints in project.glob(pattern):   # a fresh run, not a resume of the last one
                shutil.rmtree(checkpoints)
        env = {**os.environ}
        subprocess.run([sys.executable, "-m", "dsfed", "repro", "--force", "--single-item", "--no-run-cache", "--glob", *args.stages],
                       check=True, env=env)
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
    before = _outs(yaml.safe_load(lock_before))
    after = _outs(yaml.safe_load((project / "dvc.lock").read_bytes()))
    skip = ("/checkpoints", "/client-state")
    changed = {stage: sorted(p for p in outs if before.get(stage, {}).get(p) != outs[p] and not p.endswith(skip))
               for stage, outs in after.items()}
    history_only = []
    for stage, paths in changed.items():
        for path in [p for p in paths if p in metrics_before]:
            now = json.loads((project / path).read_text())
            if {k: v for k, v in now.items() if k != "resumed_from"} == {k: v for k, v in metrics_before[path].items() if k != "resumed_from"}:
                paths.remove(path)
                history_only.append(f"{path} (resumed_from {metrics_before[path].get('resumed_from')} -> {now.get('resumed_from')})")
    changed = {s: p for s, p in changed.items() if p}
    if history_only:
        print("equal but for resumed_from (the in-process run had resumed from a checkpoint):", "; ".join(history_only))
    print(f"{' '.join(args.stages)} on Flower (TLS, node auth, {len(clients)} nodes): {wall / 60:.1f} min")
    if changed:
        print("outputs that differ from the in-process run's:")
        for stage, paths in changed.items():
            print(f"  {stage}: {', '.join(paths)}")
    else:
        print("every compared output equals the in-process run's (dvc.lock hashes): weights, metrics.json, ledger.csv, dvclive")
        if not args.keep_lock:
            (project / "dvc.lock").write_bytes(lock_before)
    shutil.rmtree(flower / "superlink-demo", ignore_errors=True)
    sys.exit(1 if changed else 0)


if __name__ == "__main__":
    main()
