"""One ``federated@<method>`` run from params: clients, strategy, rounds with resume, model selection, test metrics."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from dsfed.config import MethodConfig, Params
from dsfed.data.dataset import StoreDataset
from dsfed.data.store import ClientStore, store_path
from dsfed.evaluation.metrics import evaluate, summarise
from dsfed.federated.checkpoint import latest_checkpoint
from dsfed.federated.clients import LocalTraining, SegmentationClient
from dsfed.federated.ledger import Ledger
from dsfed.federated.local_keys import LocalKeys
from dsfed.federated.protocol import Weights
from dsfed.federated.rounds import RoundRecord, RoundsConfig, run_rounds
from dsfed.federated.strategies import build_strategy
from dsfed.io import atomic_path, write_json
from dsfed.models import Segmenter, build_model
from dsfed.provenance import code_hash

__all__ = ["MethodRun", "method_config_hash", "run_method"]

log = logging.getLogger(__name__)
POOLED = "pooled"


@dataclass
class MethodRun:
    """What a finished method run hands to the stage's writer.

    Attributes:
        selected: global weights of the round with the best mean validation Dice over the source clients.
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


def method_config_hash(params: Params, method: str, stores: dict[str, ClientStore]) -> str:
    """Everything a method's result depends on: its spec, the shared training settings, seed, data, code.

    Resume is for crashes: changed params, data or dsfed code start the method afresh.
    """
    payload = {
        "code": code_hash(),
        "method": params.federated.methods[method].model_dump(mode="json"),
        "federated": params.federated.model_dump(mode="json", exclude={"methods", "clients"}),  # the stores name the federation
        "seed": params.seed,
        "classes": params.data.classes,
        "mask_size": params.data.mask_size,
        "stores": {name: store.attrs.get("fingerprint") for name, store in stores.items()},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def pick_device(choice: str) -> torch.device:
    """``auto``: CUDA when present, else the CPU."""
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def _model_factory(params: Params, spec: MethodConfig, device: torch.device) -> Callable[[], Segmenter]:
    def build() -> Segmenter:
        torch.manual_seed(params.seed)  # every client and the server start from identical weights
        return build_model(
            spec.model,
            num_classes=len(params.data.classes),
            output_size=params.data.mask_size,
            input_size=spec.input_size,
            prompt=spec.prompt,
            checkpoint=spec.checkpoint,
        ).to(device)

    return build


def _validation(clients: list[SegmentationClient]) -> Callable[[Weights], dict[str, float]]:
    """Federated evaluation: each source client scores the weights on its own val split, returns numbers only."""

    def score(weights: Weights) -> dict[str, float]:
        out: dict[str, float] = {}
        total, count = 0.0, 0
        for client in clients:
            n = sum(len(store.split("val")) for store in client.stores)
            if n == 0:
                continue
            metrics = client.evaluate(weights, "val")
            out[f"val_dice_{client.name}"] = metrics["dice"]
            total += metrics["dice"] * n
            count += n
        out["val_dice"] = total / count if count else float("nan")
        return out

    return score


def run_method(params: Params, method: str, artifacts: str | Path, work: str | Path, progress: bool = True) -> MethodRun:
    """Train ``federated.methods[method]`` over the training clients' stores.

    Args:
        params: validated params.
        method: key of ``federated.methods``.
        artifacts: artifacts root (client stores under ``clients/``).
        work: the method's output folder; ``checkpoints/<config hash>/`` (per-round checkpoints and the
            best weights so far) and ``ledger.csv`` go here, so a killed run resumes where it stopped.
    """
    cfg = params.federated
    spec = cfg.methods[method]
    artifacts, work = Path(artifacts), Path(work)
    stores = {name: ClientStore(store_path(artifacts, name)) for name in params.federation}
    training_names = params.federated_training_clients
    config_hash = method_config_hash(params, method, stores)
    checkpoints = work / "checkpoints" / config_hash
    for stale in (work / "checkpoints").glob("*"):
        if stale != checkpoints:
            log.info("%s: removing checkpoints of an older configuration (%s)", method, stale.name)
            shutil.rmtree(stale, ignore_errors=True)

    device = pick_device(cfg.device)
    factory = _model_factory(params, spec, device)
    training = LocalTraining(
        epochs=cfg.local.epochs, batch_size=cfg.local.batch_size, lr=spec.lr or cfg.local.lr,
        loss=cfg.loss, augment=cfg.augment, amp=cfg.local.amp,
    )
    local_keys = LocalKeys(spec.local_keys)
    centralized = spec.strategy == "centralized"
    if centralized:
        clients = [SegmentationClient(POOLED, [stores[n] for n in training_names], factory, training, local_keys, params.seed, device)]
    else:
        clients = [SegmentationClient(n, stores[n], factory, training, local_keys, params.seed, device) for n in training_names]
    strategy = build_strategy("fedavg" if centralized else spec.strategy, **spec.strategy_args)
    server_model = factory()
    initial = {k: v.cpu() for k, v in local_keys.shared(server_model.state_dict()).items()}
    validate = _validation(clients)
    best = _BestWeights(checkpoints / "best.safetensors")
    round0_path = checkpoints / "round0.json"
    fresh = not checkpoints.exists() or latest_checkpoint(checkpoints) is None
    if fresh:
        round0 = {"round": 0, **validate(initial)}  # the untrained model: where the curves start
        checkpoints.mkdir(parents=True, exist_ok=True)
        write_json(round0_path, round0)
        best.offer(0, round0["val_dice"], initial, force=True)

    def on_round_end(round: int, weights: Weights, record: RoundRecord) -> dict[str, float]:
        metrics = validate(weights)
        best.offer(round, metrics["val_dice"], weights)
        return metrics

    ledger = Ledger(work / "ledger.csv")
    ledger.ensure()  # pooled (centralized) training moves no payload: its ledger is the header alone
    rounds = RoundsConfig(
        rounds=spec.rounds or cfg.rounds, fraction=cfg.fraction, min_clients=min(cfg.min_clients, len(clients)), seed=params.seed
    )
    result = run_rounds(
        clients, strategy, initial, rounds, checkpoints=checkpoints, ledger=None if centralized else ledger, on_round_end=on_round_end,
        config_hash=config_hash, local_keys=local_keys, progress=progress,
    )
    curve = [json.loads(round0_path.read_text())] + [{"round": r.round, **r.metrics} for r in result.history]
    selected_round, selected = best.load()
    test = _test_metrics(params, spec, factory, selected, local_keys, clients, stores)
    return MethodRun(
        method=method, spec=spec, selected=selected, selected_round=selected_round, final=result.weights,
        curve=curve, test=test, holdout=params.data.holdout, parameters=server_model.num_parameters(),
        resumed_from=result.resumed_from,
    )


def _test_metrics(
    params: Params, spec: MethodConfig, factory: Callable[[], Segmenter], weights: Weights, local_keys: LocalKeys,
    clients: list[SegmentationClient], stores: dict[str, ClientStore],
) -> dict[str, dict[str, float]]:
    """Selected weights on every client's test split; each client evaluates itself (its local keys kept)."""
    out: dict[str, dict[str, float]] = {}
    by_name = {c.name: c for c in clients}
    classes = params.data.classes
    for name in stores:
        client = by_name.get(name)
        if client is not None:
            out[name] = client.evaluate(weights, "test")
            continue
        model = factory()  # pooled training or the held-out client: the server-side model
        model.load_state_dict(local_keys.merge(weights, local_keys.split(model.state_dict())[1]))
        out[name] = summarise(evaluate(model, StoreDataset(stores[name], "test")), classes)
    return out


class _BestWeights:
    """The best global weights so far by mean validation Dice, in a safetensors file that records its round.

    Lives in the run's checkpoint folder, so a resumed run keeps it; ties keep the earlier round.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def score(self) -> float:
        if not self.path.exists():
            return float("-inf")
        with safe_open(str(self.path), framework="pt") as fh:
            return float(fh.metadata()["val_dice"])

    def offer(self, round: int, val_dice: float, weights: Weights, force: bool = False) -> None:
        if force or val_dice > self.score():
            with atomic_path(self.path, overwrite=True) as tmp:
                meta = {"round": str(round), "val_dice": repr(float(val_dice))}
                save_file({k: v.contiguous() for k, v in weights.items()}, str(tmp), metadata=meta)

    def load(self) -> tuple[int, Weights]:
        with safe_open(str(self.path), framework="pt") as fh:
            return int(fh.metadata()["round"]), {k: fh.get_tensor(k) for k in fh.keys()}
