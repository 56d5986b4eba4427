"""A tiny real ClientAlgo for tests: an MLP with BatchNorm and dropout, trained with Adam on seeded synthetic data."""

from __future__ import annotations

import copy
import random
from typing import Any

import numpy as np
import torch
from torch import nn

from dsfed.federated import ClientInfo, FitResult, InProcessEngine, LocalKeys, Weights, proximal_term
from dsfed.federated.federation import Federation

BN_LOCAL = LocalKeys([r"^1\."])  # the BatchNorm layer of toy_model() (FedBN)


def toy_model(hidden: int = 8) -> nn.Module:
    """Linear -> BatchNorm -> ReLU -> Dropout -> Linear; the same initial weights every time for a given width."""
    with torch.random.fork_rng():
        torch.manual_seed(1234)
        return nn.Sequential(nn.Linear(4, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Dropout(0.1), nn.Linear(hidden, 1))


class ToyClient:
    """Regression ``y = x @ w + shift + noise`` with a client-specific shift; uses every global RNG while training."""

    def __init__(self, name: str, n: int = 24, seed: int = 0, local_keys: LocalKeys | None = None,
                 fail_rounds: tuple[int, ...] = (), lr: float = 1e-2, batch: int = 8, epochs: int = 1, hidden: int = 8) -> None:
        self.name = name
        self.local_keys = local_keys or LocalKeys()
        self.fail_rounds = set(fail_rounds)
        self.batch, self.epochs = batch, epochs
        data = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 4, generator=data)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + seed * 0.5 + 0.1 * torch.randn(n, generator=data)
        self.model = toy_model(hidden)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lr)
        self.shuffle = torch.Generator().manual_seed(seed + 100)
        self.received: list[set[str]] = []

    def num_samples(self) -> int:
        return len(self.x)

    def describe(self) -> ClientInfo:
        return ClientInfo({"train": len(self.x), "val": len(self.x)}, fingerprint=f"toy-{self.name}")

    def _load(self, weights: Weights) -> None:
        _, local = self.local_keys.split(self.model.state_dict())
        self.model.load_state_dict(self.local_keys.merge(weights, local))

    def train(self, weights: Weights, round: int, config: dict[str, Any]) -> FitResult:
        self.received.append(set(weights))
        if round in self.fail_rounds:
            raise OSError(28, f"disk full on {self.name}")
        self._load(weights)
        mu = float(config.get("prox_mu", 0.0))
        self.model.train()
        losses = []
        for _ in range(self.epochs):
            order = torch.randperm(len(self.x), generator=self.shuffle)
            for start in range(0, len(order), self.batch):
                idx = order[start : start + self.batch]
                jitter = 1.0 + 0.01 * float(np.random.rand()) + 0.01 * random.random()  # global numpy + python RNGs
                loss = nn.functional.mse_loss(self.model(self.x[idx] * jitter).squeeze(1), self.y[idx])
                if mu:
                    loss = loss + proximal_term(self.model.named_parameters(), weights, mu)
                self.optimizer.zero_grad()
                loss.backward()
                self.optimizer.step()
                losses.append(loss.item())
        return FitResult(self.get_weights(), self.num_samples(), {"loss": float(np.mean(losses))})

    def get_weights(self) -> Weights:
        return {k: v.detach().clone() for k, v in self.local_keys.shared(self.model.state_dict()).items()}

    def evaluate(self, weights: Weights, split: str) -> dict[str, float]:
        model = copy.deepcopy(self.model)
        _, local = self.local_keys.split(model.state_dict())
        model.load_state_dict(self.local_keys.merge(weights, local))
        model.eval()
        with torch.no_grad():
            return {"mse": float(nn.functional.mse_loss(model(self.x).squeeze(1), self.y))}

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "shuffle": self.shuffle.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.shuffle.set_state(state["shuffle"])


def toy_clients(k: int = 3, **kwargs: Any) -> list[ToyClient]:
    """``site_a``, ``site_b``, ... with different data seeds and sizes."""
    return [ToyClient(f"site_{chr(97 + i)}", n=16 + 8 * i, seed=i, **kwargs) for i in range(k)]


def federation_of(clients: list[ToyClient], run: str = "", ledger: Any = None, state_root: Any = None) -> Federation:
    """The toy clients behind an in-process engine (state in memory unless ``state_root``)."""
    return Federation(InProcessEngine(clients, state_root=state_root), run, ledger)


def initial_weights() -> Weights:
    return {k: v.clone() for k, v in toy_model().state_dict().items()}


# --------------------------------------------------------------------------------------------------
# A stage-like script for the resume test: `python -m tests.federated.toy CHECKPOINTS OUT LEDGER`
# --------------------------------------------------------------------------------------------------

PAUSE_ROUND = "DSFED_TOY_PAUSE_ROUND"  # in this round's on_round_end: write the marker file, then sleep
PAUSE_MARKER = "DSFED_TOY_PAUSE_MARKER"


def run_stage(checkpoints: str, out: str, ledger: str, rounds: int = 4, config_hash: str = "toy-v1") -> None:
    """FedAdam over 3 toy clients, 2 sampled per round, BatchNorm local; writes final weights and history."""
    import json
    import os
    import time
    from pathlib import Path

    from dsfed.federated import Ledger, RoundsConfig, build_strategy, run_rounds, to_bytes

    torch.set_num_threads(1)  # tiny ops: one thread is faster, and immune to a busy second core
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    clients = toy_clients(local_keys=BN_LOCAL)
    pause = int(os.environ.get(PAUSE_ROUND, "0"))
    federation = federation_of(clients, config_hash, Ledger(ledger), state_root=Path(checkpoints) / "client-state")

    def on_round_end(rnd: int, weights: dict[str, Weights], record: Any) -> dict[str, float]:
        replies = federation.evaluate(rnd, weights["global"], "val", [c.name for c in clients])  # each with its own state of round rnd
        val = float(np.mean([r.metrics["mse"] for r in replies.values()])) + 0.0 * np.random.rand()
        if rnd == pause:
            Path(os.environ[PAUSE_MARKER]).write_text(str(rnd))
            time.sleep(120)
        return {"val_mse": val}

    result = run_rounds(federation, build_strategy("fedadam", eta=0.05), initial_weights(), RoundsConfig(rounds=rounds, fraction=0.6, min_clients=2, seed=7),
                        checkpoints=Path(checkpoints) / "server", on_round_end=on_round_end, progress=False, local_keys=BN_LOCAL)
    Path(out).write_bytes(to_bytes(result.weights))
    Path(out).with_suffix(".json").write_text(json.dumps({"resumed_from": result.resumed_from, "history": [r.__dict__ for r in result.history]}))


if __name__ == "__main__":
    import sys

    run_stage(*sys.argv[1:4])
