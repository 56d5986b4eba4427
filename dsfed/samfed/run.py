"""One ``samfed@<variant>`` run: unlabelled clients, the teacher delivered once, FedAvg rounds with resume,
selection on the server's public val split, test metrics from every client.

The federated core does the rounds (:func:`~dsfed.federated.rounds.run_rounds`: engine seam, ledger,
checkpoints); this module builds the SAM-Fed clients and the server's side around it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dsfed.config import Params
from dsfed.data.store import ClientStore
from dsfed.federated.best import BestWeights
from dsfed.federated.checkpoint import latest_checkpoint
from dsfed.federated.engines import Engine, InProcessEngine
from dsfed.federated.errors import FederatedError
from dsfed.federated.federation import Federation
from dsfed.federated.ledger import Ledger, ledger_totals
from dsfed.federated.protocol import Weights
from dsfed.federated.rounds import RoundRecord, RoundsConfig, run_rounds
from dsfed.federated.strategies import DEFAULT_GROUP, build_strategy
from dsfed.io import atomic_path, safe_name, write_json, write_safetensors
from dsfed.models import Segmenter
from dsfed.models.card import model_card
from dsfed.models.checkpoint import read_state_dict
from dsfed.provenance import ROUNDS_CODE, code_hash
from dsfed.runtime import pick_device
from dsfed.samfed.client import TEACHER
from dsfed.samfed.clients import build_samfed_client
from dsfed.samfed.hetero import INIT
from dsfed.samfed.rcrf import RCRF, WEIGHT_PREFIX
from dsfed.samfed.server import build_architecture, public_dice
from dsfed.samfed.task import init_folder, public_store, samfed_root, teacher_folder
from dsfed.stages.prepare import store_path

__all__ = ["run_variant"]

log = logging.getLogger(__name__)
SAMFED_CODE = ("samfed",)


def _config_hash(params: Params, variant: str, fingerprints: dict[str, str | None], artifacts: Path) -> str:
    cfg = params.samfed
    spec = cfg.variants[variant]
    payload = {
        "code": code_hash(*ROUNDS_CODE, *SAMFED_CODE),
        "variant": spec.model_dump(mode="json"),
        "samfed": cfg.model_dump(mode="json", include={"rounds", "local", "loss", "augment", "agreement", "distill", "data", "min_clients"}),
        "seed": params.seed,
        "stores": dict(sorted(fingerprints.items())),
        "init": {arch: hashlib.sha256((init_folder(artifacts, arch) / "model.safetensors").read_bytes()).hexdigest()
                 for arch in sorted({cfg.architecture_of(variant, c) for c in cfg.clients} | {spec.server_model or spec.model})},
        "architectures": {arch: cfg.architectures[arch].model_dump(mode="json") for arch in cfg.architectures},
        "teacher": hashlib.sha256((teacher_folder(artifacts) / "adapter.safetensors").read_bytes()).hexdigest()
        if spec.pseudo in ("agreement", "sam") else None,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def run_variant(params: Params, variant: str, artifacts: str | Path, out: str | Path, progress: bool = True,
                engine: Engine | None = None) -> dict[str, Any]:
    """Train ``samfed.variants[variant]`` and write its model, card, metrics and curve under ``out``.

    ``engine``: how the clients are reached (a remote engine over hospitals' nodes, each building its client
    from :func:`~dsfed.samfed.clients.samfed_setup`); None: in this process over the stores under ``artifacts``.
    """
    cfg = params.samfed
    spec = cfg.variants[variant]
    artifacts, out = Path(artifacts), Path(out)
    device = pick_device("auto")
    arch = cfg.architectures[spec.model]
    needs_teacher = spec.pseudo in ("agreement", "sam")
    hetero = spec.aggregation == "rcrf"
    root = samfed_root(artifacts)

    def factory_of(architecture: str) -> Callable[[], Segmenter]:
        return lambda: build_architecture(cfg, cfg.architectures[architecture], params.seed, device)

    factory = factory_of(spec.model)
    if engine is None:
        clients = [build_samfed_client(cfg, params.seed, variant, name, store_path(root, name), public_store(artifacts),
                                       out / "client-cache" / safe_name(name), device) for name in cfg.clients]
        engine = InProcessEngine(clients, state_root=out / "client-state")
    info = Federation(engine, "").query(with_state=False)
    failed = {n: r.error for n, r in info.items() if not r.ok}
    if failed:
        raise FederatedError("; ".join(f"client {n} did not answer: {e}" for n, e in failed.items()))
    config_hash = _config_hash(params, variant, {n: r.fingerprint for n, r in info.items()}, artifacts)
    checkpoints = out / "checkpoints" / config_hash
    for stale in (out / "checkpoints").glob("*"):
        if stale != checkpoints:
            shutil.rmtree(stale, ignore_errors=True)
    ledger = Ledger(out / "ledger.csv")
    ledger.ensure()
    federation = Federation(engine, config_hash, ledger)
    fresh = not checkpoints.exists() or latest_checkpoint(checkpoints) is None
    if fresh:
        ledger.truncate_after(-1)
        shutil.rmtree(out / "client-cache", ignore_errors=True)   # a new configuration: clients cache afresh
    (out / "client-cache").mkdir(parents=True, exist_ok=True)   # a DVC out, empty when the variant needs no teacher
    if needs_teacher:   # once per client (a resumed run finds it cached and sends nothing)
        adapter = (teacher_folder(artifacts) / "adapter.safetensors").read_bytes()
        replies = federation.deliver(0, TEACHER, adapter, list(cfg.clients))
        bad = {n: r.error for n, r in replies.items() if not r.ok}
        if bad:
            raise FederatedError("; ".join(f"client {n} could not take the teacher: {e}" for n, e in bad.items()))
    public = ClientStore(public_store(artifacts))
    if hetero:
        return _run_rcrf(params, variant, artifacts, out, checkpoints, federation, engine, factory_of, public, progress)

    server = factory()
    initial = read_state_dict(init_folder(artifacts, spec.model) / "model.safetensors")
    best = BestWeights(checkpoints / "best.safetensors", metric="dice")
    curve_path = checkpoints / "round0.json"

    def score(weights: Weights) -> float:
        server.load_state_dict(weights, strict=True)
        return public_dice(server, public)

    if fresh:
        checkpoints.mkdir(parents=True, exist_ok=True)
        write_json(curve_path, {"round": 0, "public_val_dice": score(initial)})
        best.offer(0, json.loads(curve_path.read_text())["public_val_dice"], initial, force=True)

    def on_round_end(round: int, groups: dict[str, Weights], record: RoundRecord) -> dict[str, float]:
        dice = score(groups[DEFAULT_GROUP])
        best.offer(round, dice, groups[DEFAULT_GROUP])
        return {"public_val_dice": dice}

    total = spec.rounds or cfg.rounds
    rounds = RoundsConfig(rounds=total, fraction=1.0, min_clients=min(cfg.min_clients, len(cfg.clients)), seed=params.seed)
    result = run_rounds(federation, build_strategy("fedavg"), initial, rounds, checkpoints=checkpoints, on_round_end=on_round_end,
                        clients=list(cfg.clients), progress=progress)
    curve = [json.loads(curve_path.read_text())] + [{"round": r.round, **r.metrics} for r in result.history]
    selected_round, selected = best.load()
    tested = federation.evaluate(total + 1, selected, "test", list(cfg.clients))
    test = {name: reply.metrics for name, reply in tested.items() if reply.ok}
    engine.close()

    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "model.safetensors", overwrite=True) as tmp:
        write_safetensors(dict(selected), str(tmp), metadata={"round": str(selected_round)})
    write_json(out / "model.json", model_card(arch.model, arch.input_size, "none", server.num_parameters(), stage="samfed",
                                              variant=variant, architecture=spec.model, selected_round=selected_round))
    totals = ledger_totals(out / "ledger.csv")
    metrics = {"variant": variant, "spec": spec.model_dump(mode="json"), "selected_round": selected_round,
               "resumed_from": result.resumed_from, "curve": curve, "test": test,
               "communication": {"bytes_total": int(totals["total"]), "per_client": int(totals["total"] / max(len(cfg.clients), 1))}}
    write_json(out / "metrics.json", metrics)
    return metrics


def _run_rcrf(params: Params, variant: str, artifacts: Path, out: Path, checkpoints: Path, federation: Federation, engine: Engine,
              factory_of: Callable[[str], Callable[[], Segmenter]], public: ClientStore, progress: bool) -> dict[str, Any]:
    """The heterogeneous run: each architecture's init delivered to its clients once, RC + RF rounds (only public-set
    logits travel), each client selected on its public val Dice and tested with its own model at that round."""
    cfg = params.samfed
    spec = cfg.variants[variant]
    names = list(cfg.clients)
    for group in sorted({cfg.architecture_of(variant, n) for n in names}):
        members = [n for n in names if cfg.architecture_of(variant, n) == group]
        payload = (init_folder(artifacts, group) / "model.safetensors").read_bytes()
        replies = federation.deliver(0, INIT, payload, members)
        bad = {n: r.error for n, r in replies.items() if not r.ok}
        if bad:
            raise FederatedError("; ".join(f"client {n} could not take its init: {e}" for n, e in bad.items()))
    server_arch = spec.server_model or spec.model

    def server_factory() -> Segmenter:
        model = factory_of(server_arch)()
        model.load_state_dict(read_state_dict(init_folder(artifacts, server_arch) / "model.safetensors"), strict=True)
        return model

    arch = cfg.architectures[server_arch]
    strategy = RCRF(server_factory, public, rc_epochs=spec.rc_epochs, lr=arch.lr, batch_size=cfg.local["batch_size"], loss=cfg.loss,
                    lam_kd=cfg.distill.lam_kd, temperature=cfg.distill.temperature, seed=params.seed)
    round0 = checkpoints / "round0.json"
    if not round0.exists():
        checkpoints.mkdir(parents=True, exist_ok=True)
        write_json(round0, {"round": 0, "server_public_val_dice": public_dice(strategy.server, public)})

    def on_round_end(round: int, groups: dict[str, Weights], record: RoundRecord) -> dict[str, float]:
        return {"server_public_val_dice": public_dice(strategy.server, public),
                "client_public_val_dice": sum(strategy.last[n] for n in record.clients) / max(len(record.clients), 1)}

    total = spec.rounds or cfg.rounds
    rounds = RoundsConfig(rounds=total, fraction=1.0, min_clients=min(cfg.min_clients, len(names)), seed=params.seed)
    membership = {n: cfg.architecture_of(variant, n) for n in names}
    logits = strategy.server_logits()
    groups: dict[str, Weights] = {}
    for group in sorted(set(membership.values())):
        shared = spec.group_fedavg and sum(1 for a in membership.values() if a == group) > 1
        init = read_state_dict(init_folder(artifacts, group) / "model.safetensors") if shared else {}
        groups[group] = {**logits, **{WEIGHT_PREFIX + k: v for k, v in init.items()}}
    result = run_rounds(federation, strategy, groups, rounds, checkpoints=checkpoints, on_round_end=on_round_end,
                        clients=names, membership=membership, keep_rounds=lambda: sorted({int(r) for r, _ in strategy.best.values()}),
                        progress=progress)
    curve = [json.loads(round0.read_text())] + [{"round": r.round, **r.metrics} for r in result.history]
    test: dict[str, dict[str, float]] = {}
    selected: dict[str, int] = {}
    for name in names:
        selected[name] = int(strategy.best[name][0]) if name in strategy.best else 0
        reply = federation.evaluate(total + 1, {}, "test", [name], state_round=selected[name])[name]
        if reply.ok:
            test[name] = reply.metrics
    engine.close()
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "model.safetensors", overwrite=True) as tmp:   # the server's condensed model (never sent)
        write_safetensors(dict(strategy.server.state_dict()), str(tmp), metadata={"round": str(total)})
    write_json(out / "model.json", model_card(arch.model, arch.input_size, "none", strategy.server.num_parameters(), stage="samfed",
                                              variant=variant, architecture=server_arch, role="rcrf server model"))
    totals = ledger_totals(out / "ledger.csv")
    metrics = {"variant": variant, "spec": spec.model_dump(mode="json"), "aggregation": "rcrf", "selected_round": selected,
               "architectures": {n: cfg.architecture_of(variant, n) for n in names}, "resumed_from": result.resumed_from,
               "curve": curve, "test": test,
               "communication": {"bytes_total": int(totals["total"]), "per_client": int(totals["total"] / max(len(names), 1))}}
    write_json(out / "metrics.json", metrics)
    return metrics
