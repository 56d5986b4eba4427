"""Benchmark: many simulated hospitals on one box, Flower's simulation engine against the in-process engine.

A federation of ``--clients`` phantom fundus clients (sites a-e in turn, each client its own phantom seed,
10 images each; the last one held out), U-Net at 32 px, runs ``federated@fedunet`` for 1 and ``--rounds``
rounds on each engine: in process, and on Flower's simulation engine (``federated.engine: simulation``:
a private SuperLink, one simulated node per client as Ray actors, ``client_cpus`` 1). Per engine: wall
time of the stage's work; ``per_round_s`` = (t[R] - t[1]) / (R - 1), so the fixed costs (Ray start, the
ServerApp, greeting the nodes, setup) fall out; also checks the final weights are bit-identical.

    python benchmarks/flower_simulation.py --clients 20 --rounds 3 --out docs/benchmarks/flower-simulation-cpu.json

About 10 min on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import yaml  # noqa: E402
from engine_compare import engine_report, timed_run  # noqa: E402  (this folder, first on sys.path)

from dsfed.config import load_params  # noqa: E402
from dsfed.data.store import build_client_store  # noqa: E402
from dsfed.stages.prepare import store_path  # noqa: E402

SITES = ["site_a", "site_b", "site_c", "site_d", "site_e"]


def _raw(clients: int, rounds: int, engine: str) -> dict[str, Any]:
    names = [f"h{i:03d}" for i in range(clients)]
    return {
        "data": {"image_size": 32, "mask_size": 16, "holdout": names[-1]},
        "prepare": {"split": {"val": 0.2, "test": 0.2}},
        "federated": {"rounds": rounds, "min_clients": 2, "local": {"batch_size": 4, "lr": 1e-3}, "engine": engine,
                      "flower": {"timeout_s": 600, "wait_nodes_s": 120, "client_cpus": 1},
                      "methods": {"fedunet": {"model": "unet", "input_size": 32}}},
        "clients": {n: {"source": {"kind": "phantom", "task": "fundus", "path": "sites.yaml", "site": SITES[i % len(SITES)],
                                   "n": 10, "view": "roi", "seed": i}} for i, n in enumerate(names)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"   # Ray's actors compute on one thread, as this process does
    root = Path(tempfile.mkdtemp(prefix="dsfed-simulation-bench-"))
    try:
        shutil.copy(REPO / "data/phantom/sites.yaml", root / "sites.yaml")
        (root / "params.yaml").write_text(yaml.safe_dump(_raw(args.clients, 1, "inprocess")))
        params = load_params(root / "params.yaml")
        for name in params.clients:
            build_client_store(params, name, store_path(root / "artifacts", name), root=root, progress=False)
        times: dict[str, dict[int, float]] = {"inprocess": {}, "simulation": {}}
        weights: dict[str, dict[str, torch.Tensor]] = {}
        for engine in ("inprocess", "simulation"):
            for rounds in (1, args.rounds):
                times[engine][rounds], weights[f"{engine}-{rounds}"] = timed_run(root, _raw(args.clients, rounds, engine), f"{engine}-{rounds}")
                print(f"{engine} {rounds} rounds: {times[engine][rounds]:.1f} s", file=sys.stderr)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    engine_report("flower_simulation", "simulation", times, weights, args.rounds,
                  f"{args.clients} simulated clients ({args.clients - 1} train, 1 held out), 10 phantom fundus images each, "
                  "U-Net 32 px, batch 4; simulation: client_cpus 1",
                  f"python benchmarks/flower_simulation.py --clients {args.clients} --rounds {args.rounds}", args.out)

if __name__ == "__main__":
    main()
