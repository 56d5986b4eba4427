"""One ``federated@<method>`` run from params: clients, strategy, rounds with resume, model selection, test metrics."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dsfed.config import Params
from dsfed.federated.best import BestWeights
from dsfed.federated.checkpoint import latest_checkpoint
from dsfed.federated.engines import Engine, InProcessEngine
from dsfed.federated.engines.remote import setup_task
from dsfed.federated.engines.wire import SetupTask
from dsfed.federated.errors import FederatedError
from dsfed.federated.federation import Federation
from dsfed.federated.ledger import Ledger
from dsfed.federated.local_keys import LocalKeys
from dsfed.federated.model_factory import model_factory
from dsfed.federated.privacy import PrivateAggregation, privacy_spent
from dsfed.federated.protocol import ClientSetup, Weights
from dsfed.federated.registry import CENTRALIZED, CLIENT_ALGORITHMS, resolve
from dsfed.federated.rounds import RoundRecord, RoundsConfig, run_rounds
from dsfed.federated.settings import MethodConfig
from dsfed.federated.strategies import DEFAULT_GROUP, build_strategy
from dsfed.io import sha256_file, write_json
from dsfed.models import Segmenter
from dsfed.provenance import FEDERATED_CODE, code_hash
from dsfed.runtime import pick_device
from dsfed.stages.client_validation import validation_scorer
from dsfed.stages.prepare import store_path

__all__ = ["MethodRun", "method_config_hash", "holdout_clients", "model_factory", "pick_device", "remote_setup", "run_method"]

log = logging.getLogger(__name__)
POOLED = "pooled"


@dataclass
class MethodRun:
    """What a finished method run hands to the stage's writer.

    Attributes:
        selected: global weights of the round with the best mean validation Dice over the source clients,
            completed with the server's own local keys (FedBN-style keys) so that it loads strictly.
        selected_round: that round (0 = the untrained model).
        curve: per round (0 = untrained): train loss and validation metrics.
        test: client -> metric summary on its test split (held-out client included, marked in ``holdout``).
    """

    method: str
    spec: MethodConfig
    selected: Weights
    selected_round: int
    final: Weights
    curve: list[dict[str, float]]
    test: dict[str, dict[str, float]]
    holdout: str | None
    parameters: int
    resumed_from: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def method_config_hash(params: Params, method: str, fingerprints: dict[str, str | None]) -> str:
    """Everything a method's result depends on: its spec, the shared training settings, seed, data, code.

    ``fingerprints`` are the clients' data fingerprints as their query replies give them. Resume is for
    crashes: changed params, data or the code the numbers depend on (:data:`dsfed.provenance.FEDERATED_CODE`)
    start the method afresh; an edit of other code (the report, the CLI) keeps its checkpoints.
    """
    payload = {
        "code": code_hash(*FEDERATED_CODE),
        "method": params.federated.methods[method].model_dump(mode="json"),
        # the stores name the federation; the engine moves bytes, it does not change them; the codec changes
        # them (a plain codec is left out, so runs of before it existed keep their identity)
        "federated": params.federated.model_dump(mode="json", exclude={"methods", "clients", "engine", "flower", "codec"}),
        "seed": params.seed,
        "classes": params.data.classes,
        "mask_size": params.data.mask_size,
        "stores": dict(sorted(fingerprints.items())),
    }
    if not params.federated.codec.plain:
        payload["codec"] = params.federated.codec.model_dump(mode="json")
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _engine(params: Params, spec: MethodConfig, artifacts: Path, work: Path, factory: Callable[[], Segmenter], device: torch.device) -> InProcessEngine:
    """The in-process engine over the federation's clients (the held-out one evaluated only), each built by
    the method's client algorithm. ``centralized`` adds one more client, ``pooled``, holding every training
    client's store: it trains, the others only evaluate.
    """
    build = resolve(CLIENT_ALGORITHMS, spec.client, "client algorithm")
    paths = {name: store_path(artifacts, name) for name in params.federation}
    clients = [build(ClientSetup(name, [path], factory, params, spec, device)) for name, path in paths.items()]
    held = holdout_clients(params)
    if spec.strategy == CENTRALIZED:
        pooled = [paths[n] for n in params.federated_training_clients]
        clients.insert(0, build(ClientSetup(POOLED, pooled, factory, params, spec, device)))
        held = list(paths)
    return InProcessEngine(clients, state_root=work / "client-state", holdout=held)


def holdout_clients(params: Params) -> list[str]:
    """The federation's clients that are only evaluated (the held-out site)."""
    return [name for name in params.federation if name not in params.federated_training_clients]


def remote_setup(params: Params, method: str) -> SetupTask:
    """What every node builds for ``federated@<method>`` (its client algorithm over its own store); with the
    sha256 of the method's checkpoint, which every node's copy must match."""
    checkpoint = params.federated.methods[method].checkpoint
    settings: dict[str, Any] = {"params": params.model_dump(mode="json"), "method": method}
    if checkpoint is not None and Path(checkpoint).is_file():
        settings["checkpoint_sha256"] = sha256_file(checkpoint)
    return setup_task("federated", settings)


def run_method(params: Params, method: str, artifacts: str | Path, work: str | Path, progress: bool = True,
               engine: Engine | None = None) -> MethodRun:
    """Train ``federated.methods[method]`` over the training clients' stores.

    Args:
        params: validated params.
        method: key of ``federated.methods``.
        artifacts: artifacts root (client stores under ``clients/``); only the clients open them.
        work: the method's output folder; ``checkpoints/<config hash>/`` (the server's per-round checkpoints
            and the best weights so far), ``client-state/<client>/`` (each client's own state) and
            ``ledger.csv`` go here, so a killed run resumes where it stopped.
        engine: how the clients are reached; None: the in-process engine over the stores under ``artifacts``.
    """
    cfg = params.federated
    spec = cfg.methods[method]
    artifacts, work = Path(artifacts), Path(work)
    device = pick_device(cfg.device)
    factory = model_factory(params, spec, device)
    if engine is None:
        engine = _engine(params, spec, artifacts, work, factory, device)
    centralized = spec.strategy == CENTRALIZED
    info = Federation(engine, "").query(with_state=False)
    failed = {n: r.error for n, r in info.items() if not r.ok}
    if failed:
        raise FederatedError("; ".join(f"client {n} did not answer: {e}" for n, e in failed.items()))
    config_hash = method_config_hash(params, method, {n: r.fingerprint for n, r in info.items() if n != POOLED})
    checkpoints = work / "checkpoints" / config_hash
    for stale in (work / "checkpoints").glob("*"):
        if stale != checkpoints:
            log.info("%s: removing checkpoints of an older configuration (%s)", method, stale.name)
            shutil.rmtree(stale, ignore_errors=True)

    ledger = Ledger(work / "ledger.csv")
    ledger.ensure()  # pooled (centralized) training moves no payload: its ledger is the header alone
    federation = Federation(engine, config_hash, None if centralized else ledger, secure=spec.secagg,
                            codec=None if centralized else cfg.codec)
    trainers = [n for n, r in info.items() if r.trainable]
    strategy = build_strategy("fedavg" if centralized else spec.strategy, **spec.strategy_args)
    if spec.dp is not None:
        strategy = PrivateAggregation(strategy, spec.dp, params.seed)
    server_model = factory()
    local_keys = LocalKeys([*spec.local_keys, *server_model.frozen_keys])  # frozen weights never travel either
    initial = {k: v.cpu() for k, v in local_keys.shared(server_model.state_dict()).items()}
    val_samples = {n: r.samples.get("val", 0) for n, r in info.items()}
    if trainers and not any(val_samples.get(n, 0) for n in trainers):
        raise FederatedError(f"federated@{method}: no training client has validation samples ({', '.join(trainers)}): model "
                             "selection would keep the untrained round 0; raise prepare.split.val")
    validate = validation_scorer(federation, trainers, val_samples)
    best = BestWeights(checkpoints / "best.safetensors")
    round0_path = checkpoints / "round0.json"
    if not checkpoints.exists() or latest_checkpoint(checkpoints) is None:
        ledger.truncate_after(-1)  # a fresh run: nothing of an earlier attempt stays in the ledger
        round0 = {"round": 0, **validate(0, initial)}  # the untrained model: where the curves start
        checkpoints.mkdir(parents=True, exist_ok=True)
        write_json(round0_path, round0)
        best.offer(0, round0["val_dice"], initial, force=True)

    def on_round_end(round: int, groups: dict[str, Weights], record: RoundRecord) -> dict[str, float]:
        metrics = validate(round, groups[DEFAULT_GROUP])
        if math.isnan(metrics["val_dice"]):   # else round 0 would be kept (and shipped) without a word
            raise FederatedError(f"federated@{method}, round {round}: no validation score (no client's validation succeeded)")
        best.offer(round, metrics["val_dice"], groups[DEFAULT_GROUP])
        return metrics

    total = spec.rounds or cfg.rounds
    rounds = RoundsConfig(rounds=total, fraction=cfg.fraction, min_clients=min(cfg.min_clients, len(trainers)), seed=params.seed)
    result = run_rounds(
        federation, strategy, initial, rounds, checkpoints=checkpoints, on_round_end=on_round_end, clients=trainers,
        local_keys=local_keys, keep_rounds=lambda: (best.round(),), progress=progress,
    )
    curve = [json.loads(round0_path.read_text())] + [{"round": r.round, **r.metrics} for r in result.history]
    selected_round, selected = best.load()
    evaluators = [n for n in info if n != POOLED]
    # each client tests the selected weights with its own local keys of the selected round
    replies = federation.evaluate(total + 1, selected, "test", evaluators, state_round=selected_round)
    test = {name: reply.metrics for name, reply in replies.items() if reply.ok}
    engine.close()
    full = local_keys.merge(selected, local_keys.split(server_model.state_dict())[1])  # + the server's own local keys
    extra = {"privacy": privacy_spent(spec.dp, total, cfg.fraction)} if spec.dp is not None else {}
    return MethodRun(
        method=method, spec=spec, selected=full, selected_round=selected_round, final=result.weights,
        curve=curve, test=test, holdout=params.data.holdout, parameters=server_model.num_parameters(),
        resumed_from=result.resumed_from, extra=extra,
    )
