"""A federated@<method> run end to end on tiny real stores: curves, selection, ledger, held-out rule, outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from dsfed.config import parse_params
from dsfed.federated.ledger import read_ledger
from dsfed.federated.serialize import payload_size
from dsfed.models import build_model
from dsfed.stages.federated_outputs import write_method_outputs
from dsfed.stages.federated_run import run_method
from dsfed.stages.prepare import store_path
from tests.federated.project import tiny_params as _params


def test_fedavg_method_run(project: Path, stores: Path) -> None:
    params = _params(project, {"fedunet": {"model": "unet", "input_size": 32}})
    work = stores / "federated/fedunet"
    run = run_method(params, "fedunet", stores, work, progress=False)
    assert [p["round"] for p in run.curve] == [0, 1, 2]
    assert {"val_dice", "val_dice_a", "val_dice_b"} <= run.curve[1].keys() and "loss" in run.curve[1]
    assert run.selected_round == max(range(3), key=lambda i: (run.curve[i]["val_dice"], -i))
    assert set(run.test) == {"a", "b", "h"} and 0.0 <= run.test["h"]["dice"] <= 1.0
    # the ledger: every payload, training and evaluation; weights of the model's exact size
    rows = read_ledger(work / "ledger.csv")

    def exchange(rnd: int, clients: tuple[str, ...], down: str, up: str) -> list[tuple[int, str, str, str]]:
        return [(rnd, c, "down", down) for c in clients] + [(rnd, c, "up", up) for c in clients]

    expected = exchange(0, ("a", "b"), "val_weights", "val_metrics")
    for rnd in (1, 2):
        expected += exchange(rnd, ("a", "b"), "global_weights", "update") + exchange(rnd, ("a", "b"), "val_weights", "val_metrics")
    expected += exchange(3, ("a", "b", "h"), "test_weights", "test_metrics")  # the selected model, tested by every client
    assert [(r["round"], r["client"], r["direction"], r["what"]) for r in rows] == expected
    assert {r["bytes"] for r in rows if r["what"].endswith(("weights", "update"))} == {payload_size(run.final)}
    assert "h" not in {r["client"] for r in rows if r["what"] in ("global_weights", "update", "val_weights")}  # never trains or selects

    metrics = write_method_outputs(run, work)
    saved = load_file(str(work / "model.safetensors"))
    assert all(torch.equal(saved[k], v) for k, v in run.selected.items())
    assert metrics["selected_round"] == run.selected_round and metrics["holdout"] == "h"
    assert metrics["communication"]["bytes_total"] == 8 * payload_size(run.final)  # training traffic: 2 rounds x 2 clients x 2 ways
    assert metrics["communication"]["bytes_per_round_per_client"] == 2 * payload_size(run.final)
    assert metrics["communication"]["evaluation_bytes"] == sum(r["bytes"] for r in rows if r["what"].startswith(("val_", "test_")))
    assert json.loads((work / "metrics.json").read_text()) == metrics
    assert (work / "dvclive/plots/metrics/val_dice.tsv").read_text().count("\n") == 4  # header + rounds 0..2

    again = run_method(params, "fedunet", stores, work, progress=False)  # finished: resumes after round 2
    assert again.resumed_from == 2 and all(torch.equal(again.final[k], v) for k, v in run.final.items())


def test_centralized_and_local_keys(project: Path, stores: Path) -> None:
    methods = {
        "central": {"model": "unet", "input_size": 32, "strategy": "centralized"},
        "fedbn": {"model": "nnunet", "input_size": 32, "local_keys": ["norm"]},
    }
    params = _params(project, methods, rounds=1)
    central = run_method(params, "central", stores, stores / "federated/central", progress=False)
    assert {"val_dice_pooled"} <= central.curve[1].keys()
    assert read_ledger(stores / "federated/central/ledger.csv") == []  # pooled training: nothing travels
    fedbn = run_method(params, "fedbn", stores, stores / "federated/fedbn", progress=False)
    assert fedbn.final and not any("norm" in k for k in fedbn.final)
    assert {r["bytes"] for r in read_ledger(stores / "federated/fedbn/ledger.csv") if r["what"] in ("global_weights", "update")} == {payload_size(fedbn.final)}


def test_box_prompted_sam(project: Path, stores: Path) -> None:
    """MedSAM-style training: boxes from the masks (jittered) in training, tight boxes in evaluation."""
    params = _params(project, {"medsam": {"model": "sam_demo", "input_size": 64, "prompt": "box"}}, rounds=1)
    run = run_method(params, "medsam", stores, stores / "federated/medsam", progress=False)
    assert [p["round"] for p in run.curve] == [0, 1] and run.curve[1]["loss"] > 0
    assert set(run.test) == {"a", "b", "h"}


def test_changed_config_starts_afresh(project: Path, stores: Path) -> None:
    params = _params(project, {"m": {"model": "unet", "input_size": 32}}, rounds=1)
    work = stores / "federated/m"
    run_method(params, "m", stores, work, progress=False)
    first = {p.name for p in (work / "checkpoints").iterdir()}
    changed = _params(project, {"m": {"model": "unet", "input_size": 32, "lr": 5e-4}}, rounds=1)
    rerun = run_method(changed, "m", stores, work, progress=False)
    assert rerun.resumed_from is None
    second = {p.name for p in (work / "checkpoints").iterdir()}
    assert len(second) == 1 and second != first  # the old configuration's checkpoints are gone


def test_code_changes_change_the_hash(project: Path, stores: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dsfed.stages.federated_run as experiment
    from dsfed.data.store import ClientStore

    params = _params(project, {"m": {"model": "unet"}})
    prints = {n: ClientStore(store_path(stores, n)).attrs.get("fingerprint") for n in params.clients}
    before = experiment.method_config_hash(params, "m", prints)
    monkeypatch.setattr(experiment, "code_hash", lambda *parts: "other code")
    assert experiment.method_config_hash(params, "m", prints) != before


def test_fedbn_with_real_batchnorm_exports_a_loadable_model_and_tests_with_the_selected_rounds_local_keys(
    project: Path, stores: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TinySAM's BatchNorm layers kept local (FedBN): the exported model loads strictly, and each client tests the
    selected weights with its local keys of the selected round, not of the last one."""
    from dsfed.data.dataset import StoreDataset
    from dsfed.data.store import ClientStore
    from dsfed.evaluation.metrics import evaluate, summarise
    from dsfed.federated.best import BestWeights
    from dsfed.federated.local_keys import LocalKeys
    from dsfed.models.card import load_carded_model

    bn = r"\.bn\."
    params = _params(project, {"fedbn": {"model": "tinysam_demo", "input_size": 32, "local_keys": [bn]}}, rounds=2)
    original = BestWeights.offer
    monkeypatch.setattr(BestWeights, "offer", lambda self, rnd, val, w, force=False: original(self, rnd, val, w, force) if rnd == 0 else False)
    work = stores / "federated/fedbn"
    run = run_method(params, "fedbn", stores, work, progress=False)
    assert run.selected_round == 0  # forced: the untrained round is "best", the clients trained two rounds after it
    write_method_outputs(run, work)
    model = load_carded_model(work, num_classes=2, output_size=16)  # strict: every key, the local ones included
    assert any(".bn." in k for k in load_file(str(work / "model.safetensors")))

    keys = LocalKeys([bn])
    state = torch.load(next((work / "client-state" / "a").glob("*/round-0002.pt")), weights_only=True)
    assert state["local"] and all(keys.is_local(k) for k in state["local"])
    test_a = StoreDataset(ClientStore(store_path(stores, "a")), "test")
    model.load_state_dict(run.selected)  # round 0's shared weights with round 0's (initial) local keys
    expected = summarise(evaluate(model, test_a, 16), params.data.classes)
    assert run.test["a"]["dice"] == pytest.approx(expected["dice"], abs=1e-6)
    model.load_state_dict({**run.selected, **state["local"]})  # with the last round's local keys: what the bug gave
    assert summarise(evaluate(model, test_a, 16), params.data.classes)["dice"] != pytest.approx(expected["dice"], abs=1e-6)


def test_a_registered_client_algorithm_is_what_the_method_runs(project: Path, stores: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``federated.methods.<m>.client`` picks the client algorithm from the registry; the rounds loop is unchanged."""
    from dsfed.federated import clients as clients_module
    from dsfed.federated.registry import CLIENT_ALGORITHMS

    built: list[str] = []

    def counting_builder(setup):  # a client algorithm of a test: the segmentation client, counted
        built.append(setup.name)
        return clients_module.build_segmentation_client(setup)

    monkeypatch.setattr(clients_module, "counting_builder", counting_builder, raising=False)
    monkeypatch.setitem(CLIENT_ALGORITHMS, "counting", "dsfed.federated.clients:counting_builder")
    params = _params(project, {"m": {"model": "unet", "input_size": 32, "client": "counting"}}, rounds=1)
    run = run_method(params, "m", stores, stores / "federated/m", progress=False)
    assert built == ["a", "b", "h"] and set(run.test) == {"a", "b", "h"}


@pytest.mark.parametrize("mode", ["keep", "reset"])
def test_local_optimizer_state_keep_or_reset(project: Path, stores: Path, mode: str) -> None:
    """``local.optimizer_state``: Adam's step count in the client's saved state after round 2 is both rounds'
    steps (keep) or one round's (reset)."""
    raw = _params(project, {"m": {"model": "unet", "input_size": 32}}, rounds=2).model_dump(mode="json")
    raw["federated"]["local"]["optimizer_state"] = mode
    params = parse_params(raw, root=project)
    run_method(params, "m", stores, stores / f"federated/m-{mode}", progress=False)
    saved = torch.load(next((stores / f"federated/m-{mode}/client-state/a").glob("*/round-0002.pt")), weights_only=True)
    steps = {int(s["step"]) for s in saved["optimizer"]["state"].values()}
    per_round = -(-6 // 4)  # 6 training samples of client a (10 x 0.6), batches of 4
    assert steps == ({2 * per_round} if mode == "keep" else {per_round})


def test_fedmsa_sends_only_adapters_and_decoder_and_keeps_the_encoder(project: Path, stores: Path) -> None:
    """FedMSA: the frozen image encoder never travels and never changes; the exported model loads strictly."""
    from dsfed.models.card import load_carded_model

    torch.manual_seed(0)
    foundation = build_model("sam_demo", num_classes=2, output_size=16, input_size=64)
    (project / "data/pretrained").mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in foundation.state_dict().items()}, str(project / "data/pretrained/f.safetensors"))
    spec = {"model": "sam_demo", "input_size": 64, "adapter": "msa", "checkpoint": str(project / "data/pretrained/f.safetensors"), "lr": 1e-3}
    params = _params(project, {"fedmsa": spec, "fedsam": {**spec, "adapter": "none"}}, rounds=1)
    work = stores / "federated/fedmsa"
    run = run_method(params, "fedmsa", stores, work, progress=False)
    assert run.final and not any(k.startswith("sam.image_encoder.") and ".adapter." not in k for k in run.final)
    assert any(".adapter." in k for k in run.final)
    sent = {r["bytes"] for r in read_ledger(work / "ledger.csv") if r["what"] in ("global_weights", "update")}
    assert sent == {payload_size(run.final)}
    full = run_method(params, "fedsam", stores, stores / "federated/fedsam", progress=False)
    assert payload_size(run.final) < 0.5 * payload_size(full.final)  # the encoder is most of SAM
    for key, value in foundation.state_dict().items():
        if key.startswith("sam.image_encoder.") and key in run.selected:
            assert torch.equal(run.selected[key], value), key  # frozen: exported as the foundation's
    assert run.curve[1]["loss"] > 0
    write_method_outputs(run, work)
    model = load_carded_model(work, num_classes=2, output_size=16)
    assert any(".adapter." in k for k in model.state_dict())
    state = torch.load(next((work / "client-state" / "a").glob("*/round-0001.pt")), weights_only=True)
    assert not state["local"]  # frozen weights are not checkpointed at the clients


def _registered(monkeypatch: pytest.MonkeyPatch, name: str, builder) -> None:   # noqa: ANN001 - a test's client builder
    from dsfed.federated import clients as clients_module
    from dsfed.federated.registry import CLIENT_ALGORITHMS

    monkeypatch.setattr(clients_module, f"{name}_builder", builder, raising=False)
    monkeypatch.setitem(CLIENT_ALGORITHMS, name, f"dsfed.federated.clients:{name}_builder")


def test_no_validation_data_is_an_error_not_a_silent_round_0(project: Path, stores: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dsfed.federated import clients as clients_module
    from dsfed.federated.errors import FederatedError
    from dsfed.federated.protocol import ClientInfo

    def without_val(setup):  # the segmentation client, reporting no validation samples
        client = clients_module.build_segmentation_client(setup)
        info = client.describe()
        client.describe = lambda: ClientInfo({**info.samples, "val": 0}, info.fingerprint)
        return client

    _registered(monkeypatch, "noval", without_val)
    params = _params(project, {"m": {"model": "unet", "input_size": 32, "client": "noval"}}, rounds=1)
    with pytest.raises(FederatedError, match=r"^federated@m: no training client has validation samples \(a, b\): model selection would keep"):
        run_method(params, "m", stores, stores / "federated/m", progress=False)
    assert not (stores / "federated/m/model.safetensors").exists()


def test_a_client_left_out_of_rounds_is_in_the_metrics(project: Path, stores: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client whose data fails (its disk, its store) is left out while min_clients holds, and says so in metrics.json."""
    from dsfed.federated import clients as clients_module

    def failing_b(setup):  # client b's store fails while it trains in round 2
        client = clients_module.build_segmentation_client(setup)
        if setup.name == "b":
            train = client.train

            def train_or_fail(weights, round, config):   # noqa: A002 - the protocol's name
                if round == 2:
                    raise OSError(5, "Input/output error", "artifacts/clients/b/data.zarr/images/c/4/0/0/0")
                return train(weights, round, config)

            client.train = train_or_fail
        return client

    from tests.federated.project import tiny_raw

    _registered(monkeypatch, "failing", failing_b)
    raw = tiny_raw({"m": {"model": "unet", "input_size": 32, "client": "failing"}}, 2)
    raw["federated"]["min_clients"] = 1
    params = parse_params(raw, root=project)
    work = stores / "federated/m"
    metrics = write_method_outputs(run_method(params, "m", stores, work, progress=False), work)
    assert metrics["communication"]["left_out"] == {"b": [2]}
    plain = _params(project, {"p": {"model": "unet", "input_size": 32}}, rounds=1)
    assert "left_out" not in write_method_outputs(run_method(plain, "p", stores, stores / "federated/p", progress=False),
                                                  stores / "federated/p")["communication"]
