"""A secure fit on Flower: dsfed's fit task through Flower's ``SecAggPlusWorkflow`` and ``secaggplus_mod``.

Server side (:func:`secure_fit`): the workflow runs its four stages (setup, share keys, collect masked
vectors, unmask) over the ServerApp's grid. Its legacy ``Strategy`` is :class:`_Capture`: it hands each node
its fit task as a ``FitIns`` (the wire payload as the one "tensor", the wire meta in the config) and keeps
what the workflow hands ``aggregate_fit``: the unmasked weighted mean and each client's clear reply. A
:class:`_CountingGrid` between the workflow and the grid records every message's size for the ledger and
the reason of every node that dropped out.

Client side (:func:`answer_secure_fit`, called by the ClientApp's ``train`` handler under
:func:`secagg_when_asked`): the node trains as for a plain fit, then replies with the masked part of its
update as a legacy ``FitRes`` (the mod masks it) and the clear part in the metrics.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, cast

import numpy as np
from flwr.app import Context, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import Code, FitIns, FitRes, Parameters, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.common.serde import recorddict_to_proto
from flwr.compat.common import recorddict_compat as compat
from flwr.serverapp import Grid

from dsfed.federated.engines.base import FitReply, FitTask
from dsfed.federated.engines.node import Node
from dsfed.federated.engines.remote import WireMessage
from dsfed.federated.engines.wire import decode, meta_from_json, meta_to_json
from dsfed.federated.errors import FederatedError
from dsfed.federated.secure import SecureRound, masked_part, quantization_seed
from dsfed.federated.serialize import from_bytes, to_bytes
from dsfed.federated.settings import SecAggConfig

__all__ = ["answer_secure_fit", "is_secure_fit", "secagg_when_asked", "secure_fit"]

log = logging.getLogger(__name__)
FITINS = "fitins.config"
STAGE_NAMES = {  # SecAgg+ stage -> (what the server sends, what the node answers), as ledger rows
    "setup": ("secagg_setup", "secagg_public_keys"),
    "share_keys": ("secagg_public_keys", "secagg_key_shares"),
    "collect_masked_vectors": ("global_weights", "masked_update"),
    "unmask": ("secagg_unmask", "secagg_mask_shares"),
}


def record_size(content: RecordDict) -> int:
    """Bytes of a message's records as Flower serialises them (protobuf)."""
    return int(recorddict_to_proto(content).ByteSize())


# ----------------------------------------------------------------------------------------------- client side
def is_secure_fit(msg: Message) -> bool:
    """Whether a ``train`` message belongs to SecAgg+ (its stages, or the fit it wraps)."""
    return RECORD_KEY_CONFIGS in msg.content.config_records


def secagg_when_asked(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """A ClientApp mod: Flower's ``secaggplus_mod`` for SecAgg+ messages; every other message passes through."""
    from flwr.client.mod import secaggplus_mod

    if msg.metadata.message_type == MessageType.TRAIN and is_secure_fit(msg):
        return secaggplus_mod(msg, context, call_next)
    return call_next(msg, context)


def answer_secure_fit(node: Node, content: RecordDict) -> RecordDict:
    """Train as a plain fit would, then reply with the masked part of the update (a legacy ``FitRes``).

    Raises (so that Flower reports the node as dropped, with this line) when the fit fails, the update
    exceeds the clipping range, or the node trained on more samples than the weights SecAgg+ can carry.
    """
    fitins = compat.recorddict_to_fitins(content, keep_input=True)
    config = fitins.config
    meta = meta_from_json(str(config["dsfed.json"]))
    payload = bytes(fitins.parameters.tensors[0]) if fitins.parameters.tensors else b""
    task = decode("fit", meta, payload)
    if not isinstance(task, FitTask):
        raise FederatedError(f"a SecAgg+ fit carried a {type(task).__name__}")
    kind, reply_meta, reply_payload = node.answer("fit", meta, payload)
    reply = decode(kind, reply_meta, reply_payload)
    if not isinstance(reply, FitReply) or not reply.ok:
        raise FederatedError(str(getattr(reply, "error", "")) or f"a {kind} instead of a fit reply")
    start = from_bytes(payload)
    layout, arrays, clear = masked_part(from_bytes(reply.payload), start, float(cast(float, config["dsfed.clipping_range"])),
                                        node.config.client, task.round)
    max_weight = float(cast(float, config["dsfed.max_weight"]))
    if reply.num_samples > max_weight:
        raise FederatedError(f"client {node.config.client}: trained on {reply.num_samples} samples, more than the {max_weight:g} "
                             "the server announced for SecAgg+")
    np.random.seed(quantization_seed(task.run, task.round, node.config.client))  # secaggplus_mod's rounding
    clear_meta = {"client": reply.client, "num_samples": reply.num_samples, "metrics": reply.metrics}
    fitres = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(arrays), int(reply.num_samples),
                    {"dsfed.reply": json.dumps(clear_meta, sort_keys=True), "dsfed.layout": json.dumps(layout), "dsfed.clear": to_bytes(clear)})
    return compat.fitres_to_recorddict(fitres, keep_input=False)


# ----------------------------------------------------------------------------------------------- server side
class _CountingGrid:
    """The grid as the workflow sees it: every message's size recorded per node, and why a node dropped out."""

    def __init__(self, grid: Grid, client_of: Mapping[int, str]) -> None:
        self.grid = grid
        self.client_of = dict(client_of)
        self.traffic: list[tuple[str, str, str, int]] = []
        self.errors: dict[str, str] = {}

    def send_and_receive(self, messages: list[Message], *, timeout: float | None = None) -> list[Message]:
        if not messages:
            return list(self.grid.send_and_receive(messages, timeout=timeout))
        stage = ""
        for msg in messages:
            stage = str(msg.content.config_records[RECORD_KEY_CONFIGS].get("stage", stage))
            self.traffic.append((self.client_of[int(msg.metadata.dst_node_id)], "down", STAGE_NAMES[stage][0], record_size(msg.content)))
        replies = list(self.grid.send_and_receive(messages, timeout=timeout))
        asked = {m.metadata.message_id: int(m.metadata.dst_node_id) for m in messages}  # IDs are set when pushed
        answered: set[int] = set()
        for reply in replies:
            asked_id = reply.metadata.reply_to_message_id
            node = asked[asked_id] if asked_id and asked_id in asked else int(reply.metadata.src_node_id)
            answered.add(node)
            client = self.client_of.get(node, str(node))
            if reply.has_error():
                reason = (reply.error.reason or "").strip().splitlines()
                self.errors.setdefault(client, f"{STAGE_NAMES[stage][1]}: " + (reason[-1] if reason else f"flower error {reply.error.code}"))
            else:
                self.traffic.append((client, "up", STAGE_NAMES[stage][1], record_size(reply.content)))
        for node in set(asked.values()) - answered:
            self.errors.setdefault(self.client_of[node], f"{STAGE_NAMES[stage][1]}: no reply within {timeout} s")
        return replies

    def __getattr__(self, name: str) -> Any:
        return getattr(self.grid, name)


def _capture_strategy(fitins: Mapping[int, FitIns], grid: Grid) -> Any:
    """A legacy Flower strategy that hands out ``fitins`` and keeps what ``aggregate_fit`` receives."""
    from flwr.server.compat.grid_client_proxy import GridClientProxy
    from flwr.server.strategy import Strategy

    class _Capture(Strategy):
        def __init__(self) -> None:
            self.results: list[tuple[Any, FitRes]] | None = None
            self.proxies = {node: GridClientProxy(node, grid, grid.run.run_id) for node in fitins}

        def initialize_parameters(self, client_manager: Any) -> Parameters | None:
            return None

        def configure_fit(self, server_round: int, parameters: Parameters, client_manager: Any) -> list[tuple[Any, FitIns]]:
            return [(self.proxies[node], ins) for node, ins in fitins.items()]

        def aggregate_fit(self, server_round: int, results: list[tuple[Any, FitRes]], failures: list[Any]) -> tuple[None, dict[str, Any]]:
            self.results = results
            return None, {}

        def configure_evaluate(self, server_round: int, parameters: Parameters, client_manager: Any) -> list[Any]:
            return []

        def aggregate_evaluate(self, server_round: int, results: list[Any], failures: list[Any]) -> tuple[None, dict[str, Any]]:
            return None, {}

        def evaluate(self, server_round: int, parameters: Parameters) -> None:
            return None

    return _Capture()


def secure_fit(grid: Grid, node_of: Mapping[str, int], messages: Mapping[str, WireMessage], cfg: SecAggConfig, max_weight: float,
               round: int, timeout_s: float) -> SecureRound:
    """Run one fit of ``messages`` (client -> wire fit task) as a SecAgg+ round over ``grid``.

    Returns the unmasked weighted mean of the masked parts, each client's clear reply (or why it dropped
    out) and the traffic of every stage. ``max_weight`` must be at least every client's sample count.
    """
    from flwr.app import ArrayRecord, ConfigRecord
    from flwr.server.compat.legacy_context import LegacyContext
    from flwr.server.workflow import SecAggPlusWorkflow
    from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
    from flwr.server.workflow.constant import Key as WorkflowKey

    client_of = {node_of[name]: name for name in messages}
    fitins = {}
    for name, (kind, meta, payload) in messages.items():
        config = {"dsfed.kind": kind, "dsfed.json": meta_to_json(meta), "dsfed.clipping_range": float(cfg.clipping_range),
                  "dsfed.max_weight": float(max_weight)}
        fitins[node_of[name]] = FitIns(Parameters(tensors=[payload], tensor_type="dsfed.wire"), config)  # type: ignore[arg-type]
    counting = _CountingGrid(grid, client_of)
    strategy = _capture_strategy(fitins, grid)
    state = RecordDict({MAIN_PARAMS_RECORD: ArrayRecord(), MAIN_CONFIGS_RECORD: ConfigRecord({WorkflowKey.CURRENT_ROUND: round})})
    context = LegacyContext(Context(run_id=grid.run.run_id, node_id=0, node_config={}, state=state, run_config={}), strategy=strategy)
    workflow = SecAggPlusWorkflow(cfg.num_shares, cfg.reconstruction_threshold, max_weight=max_weight, clipping_range=cfg.clipping_range,
                                  quantization_range=cfg.quantization_range, modulus_range=cfg.modulus_range, timeout=timeout_s)
    workflow(cast(Grid, counting), context)

    replies: dict[str, FitReply] = {}
    mean: list[np.ndarray] | None = None
    layouts: dict[str, list[tuple[str, tuple[int, ...]]]] = {}
    for proxy, res in strategy.results or []:
        name = client_of[int(proxy.node_id)]
        clear = json.loads(str(res.metrics["dsfed.reply"]))
        layouts[name] = [(str(k), tuple(int(d) for d in shape)) for k, shape in json.loads(str(res.metrics["dsfed.layout"]))]
        replies[name] = FitReply(name, payload=bytes(cast(bytes, res.metrics["dsfed.clear"])), num_samples=int(clear["num_samples"]),
                                 metrics={k: float(v) for k, v in clear["metrics"].items()})
        mean = parameters_to_ndarrays(res.parameters)
    if len({json.dumps(v) for v in layouts.values()}) > 1:
        raise FederatedError(f"round {round}: clients sent updates of different tensors ({', '.join(layouts)}); SecAgg+ cannot add them")
    halted = strategy.results is None
    for name in messages:
        if name not in replies:
            why = counting.errors.get(name) or ("SecAgg+ halted before the sum was unmasked (too few clients or key shares: see "
                                                "secagg.reconstruction_threshold and federated.min_clients)" if halted else "dropped out")
            replies[name] = FitReply(name, error=why)
    if halted:
        mean = None
    layout = next(iter(layouts.values()), [])
    if mean is not None:
        log.info("round %d: SecAgg+ summed the updates of %d clients (%s)", round, len(layouts), ", ".join(layouts))
    return SecureRound(mean, layout, {name: replies[name] for name in messages}, counting.traffic)
