"""Benchmark: what the Flower engine costs per round against the in-process engine, same run, same seeds.

A tiny federation (phantom fundus sites a, b and held-out h, 10 images each, U-Net at 32 px) runs
``federated@fedunet`` for 1 and for ``--rounds`` rounds on each engine: in process, and on Flower (a SuperLink
and one SuperNode per client, separate processes on 127.0.0.1, plaintext). Per engine: wall time of the
stage's work; ``per_round_s`` = (t[R] - t[1]) / (R - 1), so the fixed costs (``flwr run``, greeting the
nodes, setup) fall out; ``overhead_per_round_s`` = Flower's per round minus in-process's. Also checks the
two engines' final weights are bit-identical, and where a message's time goes at the nodes
(``message_phases``: the nodes log at DEBUG, with timestamps; :mod:`flower_messages`).

    python benchmarks/flower_overhead.py --rounds 3 --out docs/benchmarks/flower-overhead-cpu.json

About 5 min on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import yaml  # noqa: E402
from engine_compare import engine_report, timed_run  # noqa: E402  (this folder, first on sys.path)
from flower_messages import message_phases, summarise_phases  # noqa: E402

from dsfed.config import load_params  # noqa: E402
from dsfed.data.store import build_client_store  # noqa: E402
from dsfed.federated.flower.ports import free_ports, wait_port  # noqa: E402
from dsfed.stages.prepare import store_path  # noqa: E402

SITES = {"a": "site_a", "b": "site_b", "h": "site_d"}


def _raw(rounds: int, engine: str, control: str) -> dict[str, Any]:
    return {
        "data": {"image_size": 32, "mask_size": 16, "holdout": "h"},
        "prepare": {"split": {"val": 0.2, "test": 0.2}},
        "federated": {"rounds": rounds, "min_clients": 2, "local": {"batch_size": 4, "lr": 1e-3}, "engine": engine,
                      "flower": {"control": control, "timeout_s": 300, "wait_nodes_s": 120},
                      "methods": {"fedunet": {"model": "unet", "input_size": 32}}},
        "clients": {n: {"source": {"kind": "phantom", "task": "fundus", "path": "sites.yaml", "site": s, "n": 10, "view": "roi"}}
                    for n, s in SITES.items()},
    }
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="dsfed-flower-bench-"))
    shutil.copy(REPO / "data/phantom/sites.yaml", root / "sites.yaml")
    (root / "params.yaml").write_text(yaml.safe_dump(_raw(1, "inprocess", "127.0.0.1:9093")))
    params = load_params(root / "params.yaml")
    for name in SITES:
        build_client_store(params, name, store_path(root / "artifacts", name), root=root, progress=False)
    fleet, control, appio, *node_ports = free_ports(3 + len(SITES))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    node_env = {**env, "FLWR_LOG_LEVEL": "DEBUG"}   # timestamps on the nodes' lines: where a message's time goes
    logs = root / "node-logs"
    logs.mkdir()
    procs = [subprocess.Popen([sys.executable, "-m", "dsfed", "server", "start", "--state", str(root / "superlink"), "--fleet-port", str(fleet),
                               "--control-port", str(control), "--serverappio-port", str(appio)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)]
    try:
        wait_port(control)
        for (name, _), port in zip(SITES.items(), node_ports, strict=True):
            procs.append(subprocess.Popen([sys.executable, "-m", "dsfed", "node", "start", "--client", name, "--data",
                                           str(store_path(root / "artifacts", name)), "--state", str(root / "nodes"),
                                           "--superlink", f"127.0.0.1:{fleet}", "--clientappio-port", str(port)],
                                          stdout=(logs / f"{name}.log").open("w"), stderr=subprocess.STDOUT, env=node_env))
        times: dict[str, dict[int, float]] = {"inprocess": {}, "flower": {}}
        weights: dict[str, dict[str, torch.Tensor]] = {}
        for engine in ("inprocess", "flower"):
            for rounds in (1, args.rounds):
                times[engine][rounds], w = timed_run(root, _raw(rounds, engine, f"127.0.0.1:{control}"), f"{engine}-{rounds}")
                weights[f"{engine}-{rounds}"] = w
                print(f"{engine} {rounds} rounds: {times[engine][rounds]:.1f} s", file=sys.stderr)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
        phases = {name: summarise_phases(message_phases(logs / f"{name}.log")) for name in SITES}
        shutil.rmtree(root, ignore_errors=True)
    engine_report("flower_overhead", "flower", times, weights, args.rounds, "3 nodes (a, b train; h held out), 10 phantom fundus images each, U-Net 32 px, batch 4",
                  f"python benchmarks/flower_overhead.py --rounds {args.rounds}", args.out,
                  {"per_message_at_the_nodes": phases})   # both Flower runs, per node: median seconds of each phase

if __name__ == "__main__":
    main()
