"""The in-process federated engine: sample clients, ship weights as bytes, aggregate, checkpoint, resume."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from dsfed.federated.checkpoint import Checkpoint, latest_checkpoint, remove_stale_temps, save_checkpoint
from dsfed.federated.errors import CheckpointError, FederatedError
from dsfed.federated.ledger import Ledger
from dsfed.federated.local_keys import LocalKeys
from dsfed.federated.protocol import ClientAlgo, FitResult, Weights
from dsfed.federated.serialize import from_bytes, to_bytes
from dsfed.federated.strategies.base import Strategy

__all__ = ["FederatedResult", "RoundEndHook", "RoundRecord", "RoundsConfig", "run_rounds", "sample_clients"]

log = logging.getLogger(__name__)


@dataclass
class RoundsConfig:
    """How many rounds, and which clients train in each.

    Attributes:
        rounds: number of federated rounds (>= 0).
        fraction: share of the clients sampled per round, in (0, 1].
        min_clients: at least this many are sampled, and at least this many must finish a round.
        seed: client sampling is drawn from ``np.random.default_rng([seed, round])``.
    """

    rounds: int
    fraction: float = 1.0
    min_clients: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.rounds < 0:
            raise FederatedError(f"federated rounds must be >= 0, got {self.rounds}")
        if not 0 < self.fraction <= 1:
            raise FederatedError(f"federated fraction must be in (0, 1], got {self.fraction}")
        if self.min_clients < 1:
            raise FederatedError(f"federated min_clients must be >= 1, got {self.min_clients}")


@dataclass
class RoundRecord:
    """What happened in one round.

    Attributes:
        round: 1-based round number.
        clients: clients whose update was aggregated (in sampling order).
        failed: sampled clients that raised -> one-line error.
        metrics: training metrics averaged over ``clients`` weighted by samples, plus what
            ``on_round_end`` returned.
    """

    round: int
    clients: list[str]
    failed: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class FederatedResult:
    """The final global (shared-key) weights, every round's record, and the round a resumed run started after."""

    weights: Weights
    history: list[RoundRecord]
    resumed_from: int | None


RoundEndHook = Callable[[int, Weights, RoundRecord], "dict[str, float] | None"]
"""``on_round_end(round, global weights, record)``: validation, logging, model selection; may return metrics."""


def sample_clients(names: Sequence[str], cfg: RoundsConfig, round: int) -> list[str]:
    """The clients trained in ``round``: ``min(n, max(min_clients, ceil(fraction * n)))`` of them.

    Deterministic in ``(cfg.seed, round)`` and independent of any global RNG; returned in the order of
    ``names``.
    """
    n = len(names)
    k = min(n, max(cfg.min_clients, math.ceil(cfg.fraction * n - 1e-9)))
    if k == n:
        return list(names)
    chosen = np.random.default_rng([cfg.seed, round]).choice(n, size=k, replace=False)
    return [names[i] for i in sorted(chosen.tolist())]


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _check_update(result: Any, reference: Weights, local_keys: LocalKeys | None) -> FitResult:
    """The client's result with local keys stripped; raises ``ValueError`` if it cannot be aggregated."""
    if not isinstance(result, FitResult):
        raise ValueError(f"train() returned {type(result).__name__}, expected FitResult")
    weights = local_keys.shared(result.weights) if local_keys else dict(result.weights)
    if set(weights) != set(reference):
        extra, missing = sorted(set(weights) - set(reference)), sorted(set(reference) - set(weights))
        raise ValueError(f"sent keys that differ from the global weights (extra {extra[:3]}, missing {missing[:3]})")
    for key, tensor in weights.items():
        if tensor.shape != reference[key].shape:
            raise ValueError(f"sent {key} with shape {tuple(tensor.shape)}, global has {tuple(reference[key].shape)}")
    if int(result.num_samples) < 0:
        raise ValueError(f"reported {result.num_samples} training samples")
    return FitResult(weights, int(result.num_samples), dict(result.metrics))


def _fit_metrics(results: list[tuple[str, FitResult]]) -> dict[str, float]:
    """Each training metric averaged over the clients that report it, weighted by their sample counts."""
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for _, result in results:
        for key, value in result.metrics.items():
            w = float(max(result.num_samples, 0))
            sums[key] = sums.get(key, 0.0) + w * float(value)
            counts[key] = counts.get(key, 0.0) + w
    return {k: sums[k] / counts[k] for k in sums if counts[k] > 0}


def _resume(
    checkpoints: Path, ckpt: Checkpoint, strategy: Strategy, clients: Sequence[ClientAlgo], shared: Weights, cfg: RoundsConfig, config_hash: str
) -> tuple[Weights, list[RoundRecord]]:
    """Check that ``ckpt`` belongs to this run and restore global weights, strategy, clients and RNGs from it."""
    hint = f"delete {checkpoints} to start over"
    if ckpt.config_hash != config_hash:
        raise CheckpointError(
            f"{checkpoints}: checkpoint of round {ckpt.round} was written under another configuration "
            f"(config hash {ckpt.config_hash[:12] or '-'}, now {config_hash[:12] or '-'}); the config changed, {hint}"
        )
    if ckpt.strategy != strategy.name:
        raise CheckpointError(f"{checkpoints}: checkpoint was written by strategy {ckpt.strategy!r}, this run uses {strategy.name!r}; {hint}")
    names = [c.name for c in clients]
    if set(ckpt.clients) != set(names):
        raise CheckpointError(f"{checkpoints}: checkpoint has clients {sorted(ckpt.clients)}, this run has {sorted(names)}; {hint}")
    if ckpt.round > cfg.rounds:
        raise CheckpointError(f"{checkpoints}: checkpoint is at round {ckpt.round}, past rounds={cfg.rounds}; {hint}")
    weights = ckpt.load_global()
    if set(weights) != set(shared):
        raise CheckpointError(f"{checkpoints}: checkpointed global weights have other keys than the initial weights; {hint}")
    ckpt.load_states(strategy, clients)
    return weights, [RoundRecord(**record) for record in ckpt.history]


def run_rounds(
    clients: Sequence[ClientAlgo],
    strategy: Strategy,
    initial: Weights,
    cfg: RoundsConfig,
    checkpoints: str | os.PathLike[str] | None = None,
    ledger: Ledger | None = None,
    on_round_end: RoundEndHook | None = None,
    config_hash: str = "",
    *,
    local_keys: LocalKeys | None = None,
    keep_checkpoints: int = 2,
    progress: bool = True,
) -> FederatedResult:
    """Run ``cfg.rounds`` federated rounds in this process, resuming from ``checkpoints`` when it holds some.

    Each round: sample clients (:func:`sample_clients`); serialise the global weights once and hand
    every sampled client its own deserialised copy (ledger ``down``/``global_weights``); call
    ``client.train``; serialise what it returns and deserialise it on the server side (ledger
    ``up``/``update``); aggregate the clients that finished with ``strategy``; call
    ``on_round_end``; checkpoint. Only safetensors bytes of weights cross between the two sides.

    Args:
        clients: the clients, with unique ``name``s.
        strategy: server strategy (FedAvg, FedProx, FedAdam...).
        initial: initial global weights; keys matching ``local_keys`` are dropped from it.
        cfg: rounds, sampling, seed.
        checkpoints: directory for per-round checkpoints; if it holds a completed round whose
            ``config_hash`` matches, the run continues after it (global weights, strategy state,
            client states, RNGs and history restored), so its result equals an uninterrupted run's.
        ledger: records every payload's exact size; rows after the resumed round are dropped first.
        on_round_end: ``(round, global weights, record) -> metrics | None``, called before the
            round's checkpoint; returned metrics are stored in the record.
        config_hash: hash of everything the run's result depends on; a checkpoint written under
            another hash raises :class:`CheckpointError`.
        local_keys: FedBN-style keys that never travel: stripped from ``initial`` and from anything
            a client returns, before serialisation.
        keep_checkpoints: completed rounds kept on disk (the newest ones).
        progress: show a tqdm bar over rounds.

    Raises:
        FederatedError: fewer than ``cfg.min_clients`` clients finished a round (one line naming the
            clients that failed and why), or ``min_clients`` exceeds the number of clients.
        CheckpointError: ``checkpoints`` belongs to another configuration or cannot be read.
    """
    names = [c.name for c in clients]
    if len(set(names)) != len(names):
        raise FederatedError(f"client names must be unique, got {names}")
    if cfg.min_clients > len(clients):
        raise FederatedError(f"federated min_clients is {cfg.min_clients} but there are only {len(clients)} clients")
    if keep_checkpoints < 1:
        raise FederatedError(f"keep_checkpoints must be >= 1, got {keep_checkpoints}")
    by_name = {c.name: c for c in clients}
    weights = local_keys.shared(initial) if local_keys else dict(initial)
    weights = from_bytes(to_bytes(weights))  # own CPU copies: the caller's tensors are never touched
    history: list[RoundRecord] = []
    resumed_from: int | None = None

    root = Path(checkpoints) if checkpoints is not None else None
    ckpt = None
    if root is not None and root.exists():
        remove_stale_temps(root)
        ckpt = latest_checkpoint(root)
    if root is not None and ckpt is not None:
        weights, history = _resume(root, ckpt, strategy, clients, weights, cfg, config_hash)
        resumed_from = ckpt.round
        log.info("resuming federated rounds from %s: round %d of %d completed", ckpt.path, ckpt.round, cfg.rounds)
    else:
        strategy.initialize(weights)
    start = (resumed_from or 0) + 1
    if ledger is not None:
        ledger.truncate_after(start - 1)
    log.info("federated rounds %d..%d with %s over %d clients (%s), %d shared tensors", start, cfg.rounds, strategy.name, len(clients), ", ".join(names), len(weights))

    bar = tqdm(total=cfg.rounds, initial=start - 1, desc=f"federated {strategy.name}", unit="round", disable=not progress)
    try:
        for rnd in range(start, cfg.rounds + 1):
            weights, rec = _run_round(rnd, by_name, strategy, weights, cfg, ledger, local_keys)
            if on_round_end is not None:
                extra = on_round_end(rnd, weights, rec)
                if extra:
                    rec.metrics.update({k: float(v) for k, v in extra.items()})
            history.append(rec)
            if root is not None:
                save_checkpoint(root, rnd, weights, strategy, clients, [asdict(r) for r in history], config_hash, keep=keep_checkpoints)
            log.info("round %d/%d done: %d clients aggregated%s; %s", rnd, cfg.rounds, len(rec.clients),
                     f", {len(rec.failed)} failed ({', '.join(rec.failed)})" if rec.failed else "",
                     ", ".join(f"{k} {v:.4g}" for k, v in rec.metrics.items()) or "no metrics")
            bar.update(1)
            bar.set_postfix({k: f"{v:.4g}" for k, v in list(rec.metrics.items())[:4]})
    finally:
        bar.close()
    return FederatedResult(weights, history, resumed_from)


def _run_round(
    rnd: int, clients: dict[str, ClientAlgo], strategy: Strategy, weights: Weights, cfg: RoundsConfig, ledger: Ledger | None, local_keys: LocalKeys | None
) -> tuple[Weights, RoundRecord]:
    """One round: send, train, receive, aggregate. Returns the new global weights and the round's record."""
    sampled = sample_clients(list(clients), cfg, rnd)
    config = strategy.configure_fit(rnd)
    log.info("round %d/%d: training %s%s", rnd, cfg.rounds, ", ".join(sampled), f" with {config}" if config else "")
    down = to_bytes(weights)
    results: list[tuple[str, FitResult]] = []
    failed: dict[str, str] = {}
    for name in sampled:
        if ledger is not None:
            ledger.record(rnd, name, "down", "global_weights", len(down))
        try:
            result = clients[name].train(from_bytes(down), rnd, dict(config))
            update = _check_update(result, weights, local_keys)
            up = to_bytes(update.weights)
        except Exception as exc:  # noqa: BLE001 - a failing client is left out of the round, whatever it raised
            failed[name] = _one_line(exc)
            log.warning("round %d: client %s failed and is left out of this round: %s", rnd, name, failed[name])
            continue
        if ledger is not None:
            ledger.record(rnd, name, "up", "update", len(up))
        log.debug("round %d: %s sent %d bytes, received %d bytes", rnd, name, len(up), len(down))
        results.append((name, FitResult(from_bytes(up), update.num_samples, update.metrics)))
    if len(results) < cfg.min_clients:
        reasons = "; ".join(f"{n} failed: {e}" for n, e in failed.items())
        raise FederatedError(f"round {rnd}: only {len(results)} of {len(sampled)} clients finished (min_clients {cfg.min_clients}); {reasons}")
    new = strategy.aggregate(rnd, weights, results)
    return new, RoundRecord(rnd, [n for n, _ in results], failed, _fit_metrics(results))
