"""The rounds loop: sample clients, ship weights as bytes through an engine, aggregate, checkpoint, resume."""

from __future__ import annotations

import logging
import math
import os
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from dsfed.errors import TrainingDiverged
from dsfed.federated.checkpoint import Checkpoint, latest_checkpoint, remove_stale_temps, save_checkpoint
from dsfed.federated.errors import CheckpointError, FederatedError
from dsfed.federated.federation import Federation
from dsfed.federated.local_keys import LocalKeys
from dsfed.federated.protocol import FitResult, Weights
from dsfed.federated.serialize import from_bytes, to_bytes
from dsfed.federated.strategies.base import DEFAULT_GROUP, Strategy

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
    """The final named weight groups (shared keys), every round's record, and the round a resumed run started after."""

    groups: dict[str, Weights]
    history: list[RoundRecord]
    resumed_from: int | None

    @property
    def weights(self) -> Weights:
        """The global weights of a single-group run."""
        if len(self.groups) != 1:
            raise FederatedError(f"this run has {len(self.groups)} weight groups ({', '.join(self.groups)}); pick one from .groups")
        return next(iter(self.groups.values()))


RoundEndHook = Callable[[int, "dict[str, Weights]", RoundRecord], "dict[str, float] | None"]
"""``on_round_end(round, weight groups, record)``: validation, logging, model selection; may return metrics."""


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


def _check_update(update: Weights, reference: Weights, local_keys: LocalKeys | None) -> Weights:
    """A client's update with local keys stripped; raises ``ValueError`` if it cannot be aggregated."""
    weights = local_keys.shared(update) if local_keys else dict(update)
    if set(weights) != set(reference):
        extra, missing = sorted(set(weights) - set(reference)), sorted(set(reference) - set(weights))
        raise ValueError(f"sent keys that differ from the global weights (extra {extra[:3]}, missing {missing[:3]})")
    for key, tensor in weights.items():
        if tensor.shape != reference[key].shape:
            raise ValueError(f"sent {key} with shape {tuple(tensor.shape)}, global has {tuple(reference[key].shape)}")
    return weights


def _stop_if_not_finite(weights: Weights, what: str) -> None:
    """Raise :class:`TrainingDiverged` naming the first floating-point tensor with a NaN or an infinity."""
    for key, tensor in weights.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise TrainingDiverged(f"{what} non-finite weights ({key}): lower the learning rate (or check the data)")


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
    checkpoints: Path, ckpt: Checkpoint, strategy: Strategy, federation: Federation, membership: dict[str, str], shared: dict[str, Weights],
    cfg: RoundsConfig,
) -> tuple[dict[str, Weights], list[RoundRecord]]:
    """Check that ``ckpt`` belongs to this run, that every client still holds its state, and restore the server side."""
    hint = f"delete {checkpoints} to start over"
    if ckpt.config_hash != federation.run:
        raise CheckpointError(
            f"{checkpoints}: checkpoint of round {ckpt.round} was written under another configuration "
            f"(config hash {ckpt.config_hash[:12] or '-'}, now {federation.run[:12] or '-'}); the config changed, {hint}"
        )
    if ckpt.strategy != strategy.name:
        raise CheckpointError(f"{checkpoints}: checkpoint was written by strategy {ckpt.strategy!r}, this run uses {strategy.name!r}; {hint}")
    names = list(membership)
    if ckpt.clients != membership:
        raise CheckpointError(f"{checkpoints}: checkpoint has clients {ckpt.clients}, this run has {membership}; {hint}")
    if ckpt.round > cfg.rounds:
        raise CheckpointError(f"{checkpoints}: checkpoint is at round {ckpt.round}, past rounds={cfg.rounds}; {hint}")
    weights = ckpt.load_groups()
    if set(weights) != set(shared) or any(set(weights[g]) != set(shared[g]) for g in shared):
        raise CheckpointError(f"{checkpoints}: checkpointed weight groups have other keys than the initial weights; {hint}")
    history = [RoundRecord(**record) for record in ckpt.history]
    held = federation.query(names)
    for name in names:
        trained = [r.round for r in history if name in r.clients]
        have = [r for r in held[name].state_rounds if r <= ckpt.round]
        if trained and (not have or have[-1] < trained[-1]):
            raise CheckpointError(
                f"{checkpoints}: client {name} trained in round {trained[-1]} but holds no state of it "
                f"(it has rounds {have or 'none'}); {hint}"
            )
    ckpt.load_states(strategy)
    return weights, history


def run_rounds(
    federation: Federation,
    strategy: Strategy,
    initial: Weights | Mapping[str, Weights],
    cfg: RoundsConfig,
    checkpoints: str | os.PathLike[str] | None = None,
    on_round_end: RoundEndHook | None = None,
    *,
    clients: Sequence[str] | None = None,
    membership: Mapping[str, str] | None = None,
    local_keys: LocalKeys | None = None,
    keep_rounds: Callable[[], Iterable[int]] | None = None,
    keep_checkpoints: int = 2,
    progress: bool = True,
) -> FederatedResult:
    """Run ``cfg.rounds`` federated rounds through ``federation``, resuming from ``checkpoints`` when it holds some.

    Each round: sample clients (:func:`sample_clients`); send each its weights through the engine
    (serialised once, ledger ``down``/``global_weights``); receive the updates (ledger ``up``/``update``);
    aggregate those that finished with ``strategy``; call ``on_round_end``; checkpoint the server side.
    Only safetensors bytes of weights cross between the two sides, and each client keeps its own state.

    Args:
        federation: the engine, the run's identity (``federation.run``: the hash of everything the run's
            result depends on; a checkpoint written under another raises :class:`CheckpointError`) and the ledger.
        strategy: server strategy (FedAvg, FedProx, FedAdam...).
        initial: initial global weights, or named weight groups (``{"unet": ..., "tinysam": ...}``) for
            clients of several architectures; keys matching ``local_keys`` are dropped.
        cfg: rounds, sampling, seed.
        checkpoints: directory for per-round checkpoints; if it holds a completed round of this run, the
            run continues after it (global weights, strategy state, RNGs and history restored; each client
            restores its own state), so its result equals an uninterrupted run's.
        on_round_end: ``(round, global weights, record) -> metrics | None``, called before the round's
            checkpoint; returned metrics are stored in the record.
        clients: the clients that train (default: every client the engine reaches that is trainable).
        membership: each training client's weight group (default: the single group, for every client).
        local_keys: FedBN-style keys that never travel: stripped on the client before sending and from
            anything that arrives.
        keep_rounds: rounds whose client state must survive pruning (e.g. the best round so far).
        keep_checkpoints: completed rounds kept on disk (the newest ones).
        progress: show a tqdm bar over rounds.

    Raises:
        FederatedError: fewer than ``cfg.min_clients`` clients finished a round (one line naming the
            clients that failed and why), ``min_clients`` exceeds the number of clients, or a client
            reported a bug in its code.
        CheckpointError: ``checkpoints`` belongs to another configuration, cannot be read, or a client
            no longer holds the state it needs.
    """
    if clients is None:
        replies = federation.query(with_state=False)
        clients = [name for name, reply in replies.items() if reply.ok and reply.trainable]
    names = list(clients)
    if len(set(names)) != len(names):
        raise FederatedError(f"client names must be unique, got {names}")
    groups = _as_groups(initial)
    members = _membership(names, groups, membership)
    if cfg.min_clients > len(names):
        raise FederatedError(f"federated min_clients is {cfg.min_clients} but there are only {len(names)} clients")
    if keep_checkpoints < 1:
        raise FederatedError(f"keep_checkpoints must be >= 1, got {keep_checkpoints}")
    # own CPU copies of the shared keys: the caller's tensors are never touched
    weights = {g: from_bytes(to_bytes(local_keys.shared(w) if local_keys else dict(w))) for g, w in groups.items()}
    history: list[RoundRecord] = []
    resumed_from: int | None = None

    root = Path(checkpoints) if checkpoints is not None else None
    ckpt = None
    if root is not None and root.exists():
        remove_stale_temps(root)
        ckpt = latest_checkpoint(root)
    if root is not None and ckpt is not None:
        weights, history = _resume(root, ckpt, strategy, federation, members, weights, cfg)
        resumed_from = ckpt.round
        log.info("resuming federated rounds from %s: round %d of %d completed", ckpt.path, ckpt.round, cfg.rounds)
    else:
        strategy.initialize(weights)
        # this process's Python and numpy generators, whose states each round's checkpoint saves (rng.pt): from the
        # run's seed, not from wherever the interpreter's start left them (else the same run wrote new bytes each time)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
    start = (resumed_from or 0) + 1
    if federation.ledger is not None:
        federation.ledger.truncate_after(start - 1)
    log.info("federated rounds %d..%d with %s over %d clients (%s), weight groups %s", start, cfg.rounds, strategy.name, len(names),
             ", ".join(names), ", ".join(f"{g} ({len(w)} shared tensors)" for g, w in weights.items()))

    bar = tqdm(total=cfg.rounds, initial=start - 1, desc=f"federated {strategy.name}", unit="round", disable=not progress)
    try:
        for rnd in range(start, cfg.rounds + 1):
            keep = tuple(keep_rounds()) if keep_rounds is not None else ()
            weights, rec = _run_round(rnd, federation, members, strategy, weights, cfg, local_keys, keep)
            if on_round_end is not None:
                extra = on_round_end(rnd, weights, rec)
                if extra:
                    rec.metrics.update({k: float(v) for k, v in extra.items()})
            history.append(rec)
            if root is not None:
                save_checkpoint(root, rnd, weights, strategy, members, [asdict(r) for r in history], federation.run, keep=keep_checkpoints)
            log.info("round %d/%d done: %d clients aggregated%s; %s", rnd, cfg.rounds, len(rec.clients),
                     f", {len(rec.failed)} failed ({', '.join(rec.failed)})" if rec.failed else "",
                     ", ".join(f"{k} {v:.4g}" for k, v in rec.metrics.items()) or "no metrics")
            bar.update(1)
            bar.set_postfix({k: f"{v:.4g}" for k, v in list(rec.metrics.items())[:4]})
    finally:
        bar.close()
    return FederatedResult(weights, history, resumed_from)


def _as_groups(initial: Weights | Mapping[str, Weights]) -> dict[str, Weights]:
    """``initial`` as named weight groups: a plain state dict is the single group ``global``."""
    if initial and all(isinstance(v, Mapping) for v in initial.values()):
        return {str(g): dict(w) for g, w in initial.items()}  # type: ignore[arg-type]
    return {DEFAULT_GROUP: dict(initial)}  # type: ignore[arg-type]


def _membership(names: list[str], groups: dict[str, Weights], membership: Mapping[str, str] | None) -> dict[str, str]:
    if membership is None:
        if len(groups) != 1:
            raise FederatedError(f"{len(groups)} weight groups ({', '.join(groups)}) need a membership: which group each client is in")
        return dict.fromkeys(names, next(iter(groups)))
    missing = [n for n in names if n not in membership]
    unknown = sorted({g for n, g in membership.items() if n in names and g not in groups})
    if missing or unknown:
        raise FederatedError(f"weight groups: clients without a group {missing}, groups without initial weights {unknown}")
    return {n: membership[n] for n in names}


def _run_round(
    rnd: int, federation: Federation, membership: dict[str, str], strategy: Strategy, groups: dict[str, Weights], cfg: RoundsConfig,
    local_keys: LocalKeys | None, keep: tuple[int, ...],
) -> tuple[dict[str, Weights], RoundRecord]:
    """One round: send, train, receive, aggregate per group. Returns the new weight groups and the round's record."""
    sampled = sample_clients(list(membership), cfg, rnd)
    config = strategy.configure_fit(rnd)
    log.info("round %d/%d: training %s%s", rnd, cfg.rounds, ", ".join(sampled), f" with {config}" if config else "")
    payloads = strategy.payloads(rnd, groups, membership, sampled)
    replies = federation.fit(
        rnd, payloads, dict.fromkeys(sampled, config), committed=rnd - 1, keep=keep, local_keys=local_keys.patterns if local_keys else (),
    )
    results: list[tuple[str, FitResult]] = []
    failed: dict[str, str] = {}
    for name in sampled:
        reply = replies[name]
        if reply.ok:
            try:
                update = _check_update(federation.decode_update(reply.payload, payloads[name]), groups[membership[name]], local_keys)
                if reply.num_samples < 0:
                    raise ValueError(f"reported {reply.num_samples} training samples")
            except (ValueError, FederatedError) as exc:  # a malformed update: the server refuses it, the client is left out
                reply.error = f"{type(exc).__name__}: {exc}"
            else:
                _stop_if_not_finite(update, f"client {name}, round {rnd}: sent")
                results.append((name, FitResult(update, reply.num_samples, reply.metrics)))
                continue
        failed[name] = str(reply.error)
        log.warning("round %d: client %s failed and is left out of this round: %s", rnd, name, failed[name])
    if len(results) < cfg.min_clients:
        reasons = "; ".join(f"{n} failed: {e}" for n, e in failed.items())
        raise FederatedError(f"round {rnd}: only {len(results)} of {len(sampled)} clients finished (min_clients {cfg.min_clients}); {reasons}")
    new = strategy.aggregate_groups(rnd, groups, results, membership)
    for group, weights in new.items():
        _stop_if_not_finite(weights, f"round {rnd}: aggregation gave" + (f" group {group}" if len(new) > 1 else ""))
    return new, RoundRecord(rnd, [n for n, _ in results], failed, _fit_metrics(results))
