"""The server-side DSFedMed stages in-process at tiny size: server_sam, distill, evaluate, report.

Built on the generation chain of ``tests/generation/test_stages.py`` (client ``a`` trains, ``h`` is held
out), plus a random foundation SAM checkpoint and a random student "federated" model.
"""

from __future__ import annotations

import csv
import html
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from dsfed.config import Params, parse_params
from dsfed.evaluation.suite import bootstrap_ci
from dsfed.federated.ledger import ledger_totals, read_ledger
from dsfed.models import build_model
from dsfed.models.card import load_carded_model
from dsfed.server.outputs import save_model
from dsfed.stages.distill import run_distill_stage
from dsfed.stages.evaluate import run_evaluate_stage
from dsfed.stages.report import build_report, flow_findings, left_out_lines
from dsfed.stages.server_sam import run_server_sam_stage
from dsfed.stages.synthesize import synthetic_path
from tests.generation.test_stages import chain  # noqa: F401 - the module-scoped fixture

SERVER = {"model": "sam_demo", "input_size": 64, "epochs": 2, "batch_size": 4, "lr": 1e-3, "augment": {"enabled": False}}
DISTILL = {"rounds": 2, "rate": 0.5, "batch_size": 4, "lr_sam": 1e-3, "lr_tiny": 1e-3}


def server_params(root: Path, chain_params: Params, **sections: dict) -> Params:
    raw = chain_params.model_dump(mode="json")
    raw["federated"]["methods"] = {"fedtinysam": {"model": "tinysam_demo", "input_size": 64}}
    raw["server_sam"] = {**SERVER, "checkpoint": str(root / "foundation.safetensors")}
    raw["distill"] = DISTILL
    raw["evaluate"] = {"bootstrap": 200, "timing_images": 2, "overlays": 2}
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value}
    return parse_params(raw, root=root)


@pytest.fixture(scope="module")
def server(chain: tuple[Path, Params]) -> tuple[Path, Params]:  # noqa: F811
    """The chain plus a foundation checkpoint, a student model, then server_sam, distill and evaluate."""
    root, chain_params = chain
    torch.manual_seed(1)
    foundation = build_model("sam_demo", num_classes=2, output_size=16, input_size=64)
    save_file({k: v.contiguous() for k, v in foundation.state_dict().items()}, str(root / "foundation.safetensors"))
    torch.manual_seed(2)
    student = build_model("tinysam_demo", num_classes=2, output_size=16, input_size=64)
    art = root / "artifacts"
    save_model(art / "federated" / "fedtinysam", student, "tinysam_demo", 64)
    params = server_params(root, chain_params)
    with open(art / "federated" / "fedtinysam" / "ledger.csv", "w") as fh:
        fh.write("round,client,direction,what,bytes\n1,a,down,global_weights,100\n1,a,up,update,100\n")
    run_server_sam_stage(params, art, progress=False)
    run_distill_stage(params, art)
    run_evaluate_stage(params, art)
    return root, params


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def test_server_sam_keeps_the_epoch_the_clients_real_validation_prefers(server: tuple[Path, Params], tmp_path: Path) -> None:
    root, params = server
    out = root / "artifacts/server_sam"
    metrics = json.loads((out / "metrics.json").read_text())
    history = metrics["history"]
    assert [h["epoch"] for h in history] == [0, 1, 2] and metrics["select"] == "real"
    best = max(history, key=lambda h: (h["real_val_dice"], -h["epoch"]))  # epoch 0: the foundation itself
    assert metrics["selected_epoch"] == best["epoch"]
    assert metrics["real_val_dice"]["selected"] == best["real_val_dice"] and metrics["real_val_dice"]["clients"] == ["a"]
    assert metrics["train_samples"] == len(np.asarray(__import__("zarr").open_group(str(synthetic_path(root / "artifacts", "a")), mode="r")["splits/train"]))
    assert metrics["start"]["sha256"] and len(metrics["start"]["sha256"]) == 64
    model = load_carded_model(out, 2, 16)
    assert model.input_size == 64 and model.num_parameters() == metrics["parameters"]
    # every epoch's weights went down to the source client and its metrics came back, in the ledger
    rows = (out / "ledger.csv").read_text().splitlines()[1:]
    down = [r for r in rows if ",down,val_weights," in r]
    assert [r.split(",")[:2] for r in down] == [["0", "a"], ["1", "a"], ["2", "a"]]
    assert sum(",up,val_metrics," in r for r in rows) == 3 and not list(out.glob(".ledger*"))
    # DSFedMed's code selects on synthetic validation: no traffic, the synthetic curve decides
    art = tmp_path / "artifacts"
    shutil.copytree(root / "artifacts/synthetic", art / "synthetic")
    synthetic = run_server_sam_stage(server_params(root, params, server_sam={"select": "synthetic"}), art, progress=False)
    best = max(synthetic["history"], key=lambda h: (h["val_dice_mean"], -h["epoch"]))
    assert synthetic["selected_epoch"] == best["epoch"] and synthetic["real_val_dice"] is None
    assert not (art / "server_sam/ledger.csv").exists() and "real_val_dice" not in synthetic["history"][0]


def test_distill_outputs_rounds_pools_and_ledger(server: tuple[Path, Params]) -> None:
    root, params = server
    out = root / "artifacts/distill"
    metrics = json.loads((out / "metrics.json").read_text())
    rounds = metrics["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2]
    n = metrics["train_samples"]
    assert metrics["pool_size"] == round(0.5 * n)
    for stem in ("sam", "tiny"):
        curve = {r["round"]: r[f"val_dice_{stem}"] for r in rounds if r["round"] > 0}
        assert metrics["synthetic_val_dice"]["selected_round"][stem] == max(curve, key=lambda r: (curve[r], -r))
        real = {r["round"]: r[f"real_val_dice_{stem}"] for r in rounds if r["round"] > 0}
        guard = metrics["guard"][stem]
        assert guard["undistilled_val_dice"] == rounds[0][f"real_val_dice_{stem}"]
        best = max(real, key=lambda r: (real[r], -r))
        assert guard["round"] == (best if real[best] > guard["undistilled_val_dice"] else None)
    with open(out / "rounds.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 * n and {r["client"] for r in rows} == {"a"}  # never the held-out client
    for r in (1, 2):
        assert sum(int(x["in_pool"]) for x in rows if int(x["round"]) == r) == metrics["pool_size"]
    ledger = read_ledger(out / "ledger.csv")
    size = (out / "tiny/model.safetensors").stat().st_size
    sent = [(x["client"], x["direction"], x["what"], x["bytes"]) for x in ledger if x["what"] == "deployed_model"]
    assert sent == [(c, "down", "deployed_model", size) for c in params.clients]
    assert sorted(x["client"] for x in ledger if x["what"] == "deployed_model_receipt") == sorted(params.clients)
    # every client (the held-out one too) keeps the student it deploys, byte for byte
    (work,) = (out / "checkpoints").iterdir()
    for client in params.clients:
        assert (work / "received" / client / "deployed_model.safetensors").read_bytes() == (out / "tiny/model.safetensors").read_bytes()
    # validation at the clients: both models before distillation and after each round, at the source client only
    validation = [x for x in ledger if not x["what"].startswith("deployed_model")]
    assert {x["client"] for x in validation} == {"a"} and len(validation) == 3 * 2 * 2
    assert {x["what"] for x in validation if x["direction"] == "down"} == {"val_weights"}
    assert {x["what"] for x in validation if x["direction"] == "up"} == {"val_metrics"}
    assert all(x["bytes"] < 1000 for x in validation if x["direction"] == "up")  # numbers only
    assert (out / "dvclive/plots/metrics/val_dice_tiny.tsv").is_file()


def test_distillation_changes_both_models_and_the_guard_ships_what_it_says(server: tuple[Path, Params]) -> None:
    root, _ = server
    art = root / "artifacts"
    metrics = json.loads((art / "distill/metrics.json").read_text())
    for stem, before in (("sam", art / "server_sam"), ("tiny", art / "federated/fedtinysam")):
        start, unguarded, shipped = _weights(before), _weights(art / "distill/unguarded" / stem), _weights(art / "distill" / stem)
        assert any(not torch.equal(start[k], unguarded[k]) for k in start), stem
        if metrics["guard"][stem]["source"] == "undistilled":
            assert all(torch.equal(start[k], shipped[k]) for k in start), stem
        else:
            assert any(not torch.equal(start[k], shipped[k]) for k in start), stem


def test_the_guard_keeps_the_student_when_distillation_hurts(server: tuple[Path, Params], tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """The fixture's teacher is a random foundation SAM after two epochs on a few synthetic pairs: weaker than
    its student, and distilling from it hurts the student on the client's real data. The guard keeps the
    undistilled student and the log, the metrics and the report say why, with both figures."""
    root, params = server
    art = tmp_path / "artifacts"
    shutil.copytree(root / "artifacts", art)
    caplog.set_level("INFO")
    metrics = run_distill_stage(params, art)  # resumes the completed run: the same decision, logged again
    teacher, tiny = metrics["teacher"], metrics["guard"]["tiny"]
    real = [r["real_val_dice_tiny"] for r in metrics["rounds"] if r["round"] > 0]
    assert teacher["weaker"] and max(real) < tiny["undistilled_val_dice"]  # the premise: distillation hurt
    assert tiny["source"] == "undistilled" and tiny["round"] is None
    student, shipped = _weights(art / "federated/fedtinysam"), _weights(art / "distill/tiny")
    assert all(torch.equal(student[k], shipped[k]) for k in student)
    figures = (f"{teacher['teacher_val_dice']:.3f}", f"{tiny['undistilled_val_dice']:.3f}", f"{tiny['best_val_dice']:.3f}")
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and r.name == "dsfed.stages.distill"]
    assert any("teacher is weaker" in m for m in warned) and any("ships undistilled" in m and all(f in m for f in figures) for m in warned)
    report = build_report(params, art)
    assert any("ships undistilled" in line and all(f in line for f in figures) for line in report["findings"])
    assert "premise" in Path(report["markdown"]).read_text()


def test_weak_teacher_skip_ships_the_student_without_distilling(server: tuple[Path, Params], tmp_path: Path) -> None:
    root, params = server
    art = tmp_path / "artifacts"
    for sub in ("clients", "synthetic", "federated", "server_sam"):
        shutil.copytree(root / "artifacts" / sub, art / sub)
    metrics = run_distill_stage(server_params(root, params, distill={"weak_teacher": "skip"}), art)
    assert metrics["teacher"]["weaker"] and metrics["teacher"]["action"] == "skipped"
    assert [r["round"] for r in metrics["rounds"]] == [0] and "skipped" in metrics["verdict"]
    student = _weights(art / "federated/fedtinysam")
    for folder in ("distill/tiny", "distill/unguarded/tiny"):
        assert all(torch.equal(student[k], v) for k, v in _weights(art / folder).items()), folder


def test_server_stages_never_read_held_out_data(server: tuple[Path, Params], tmp_path: Path) -> None:
    """With the held-out client's store and synthetic store gone, server_sam and distill give bit-identical
    models (distill's clients validate on their own stores; the held-out one never takes part)."""
    root, params = server
    art = tmp_path / "artifacts"
    shutil.copytree(root / "artifacts/synthetic", art / "synthetic")
    shutil.rmtree(art / "synthetic" / "h")
    shutil.copytree(root / "artifacts/clients/a", art / "clients/a")
    shutil.copytree(root / "artifacts/federated", art / "federated")
    run_server_sam_stage(params, art, progress=False)
    run_distill_stage(params, art)
    for folder in ("server_sam", "distill/sam", "distill/tiny", "distill/unguarded/tiny"):
        a, b = _weights(root / "artifacts" / folder), _weights(art / folder)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), folder


def test_distill_resumes_and_warm_starts_only_for_new_inputs(server: tuple[Path, Params], tmp_path: Path) -> None:
    root, params = server
    art = tmp_path / "artifacts"
    for sub in ("clients", "synthetic", "federated", "server_sam", "distill"):
        shutil.copytree(root / "artifacts" / sub, art / sub)
    # same settings and inputs: the completed checkpoint is reused, the same models come out
    (art / "distill/rounds.csv").unlink()  # as DVC does before it reruns the stage
    again = run_distill_stage(params, art)
    assert again["warm_start_from"] is None
    assert (art / "distill/rounds.csv").read_text() == (root / "artifacts/distill/rounds.csv").read_text()
    assert all(torch.equal(v, _weights(root / "artifacts/distill/tiny")[k]) for k, v in _weights(art / "distill/tiny").items())
    # a new server SAM (as after a client joins and server_sam reruns), same student and settings:
    # warm start from the previous final models
    def nudge(path: Path) -> None:
        state = load_file(str(path))
        first = next(iter(state))
        state[first] = state[first] + 0.01
        save_file(state, str(path))

    nudge(art / "server_sam/model.safetensors")
    warm = run_distill_stage(params, art)
    assert warm["warm_start_from"] is not None and warm["warm_start_from"].endswith("round-0002")
    assert len(list((art / "distill/checkpoints").iterdir())) == 1  # the older run's checkpoints are gone
    # a retrained student: from scratch, so the distilled models never hide a newer student
    nudge(art / "federated/fedtinysam/model.safetensors")
    assert run_distill_stage(params, art)["warm_start_from"] is None
    # other settings (an ablation): never warm-started
    ablation = server_params(root, params, distill={"lam": 0.3})
    cold = run_distill_stage(ablation, art)
    assert cold["warm_start_from"] is None


def test_evaluate_scores_every_model_on_every_client(server: tuple[Path, Params]) -> None:
    root, params = server
    art = root / "artifacts"
    ev = json.loads((art / "eval/metrics.json").read_text())
    assert ev["order"] == ["fedtinysam", "foundation", "server_sam", "dsfedmed_tiny", "dsfedmed_tiny_unguarded", "dsfedmed_sam"] and set(ev["models"]) == set(ev["order"])
    assert ev["holdout"] == "h" and ev["source_clients"] == ["a"]
    for key, m in ev["models"].items():
        assert set(m["clients"]) == {"a", "h"}
        for client, s in m["clients"].items():
            lo, hi = s["dice_ci"]
            assert 0 <= lo <= s["dice"] <= hi <= 1, (key, client)
            assert s["n"] > 0 and 0 <= s["iou"] <= s["dice"] + 1e-9
        assert m["holdout"] == m["clients"]["h"] and m["source_mean"]["dice"] == m["clients"]["a"]["dice"]
        assert m["efficiency"]["gflops_per_image"] > 0 and "inference_ms_per_image" not in m["efficiency"]
    eff = {k: m["efficiency"] for k, m in ev["models"].items()}
    assert eff["fedtinysam"]["communication_bytes"] == 200
    generation = sum(ledger_totals(p)["total"] for p in [art / "generators/a/ledger.csv", art / "quality/a/audit_ledger.csv"])
    distilled = ledger_totals(art / "distill/ledger.csv")["total"]
    assert eff["dsfedmed_tiny"]["communication_bytes"] == 200 + generation + distilled
    assert eff["server_sam"]["parameters"] == eff["dsfedmed_sam"]["parameters"] > eff["fedtinysam"]["parameters"]
    with open(art / "eval/per_image.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6 * (ev["models"]["fedtinysam"]["clients"]["a"]["n"] + ev["models"]["fedtinysam"]["clients"]["h"]["n"])
    per = [float(r["dice_optic_disc"]) for r in rows if r["model"] == "fedtinysam" and r["client"] == "a"]
    assert abs(np.mean(per) - ev["models"]["fedtinysam"]["clients"]["a"]["dice_optic_disc"]) < 1e-4


def test_report_is_self_contained(server: tuple[Path, Params]) -> None:
    root, params = server
    result = build_report(params, root / "artifacts")
    page = Path(result["html"]).read_text()
    assert "<table>" in page and "DSFedMed SAM" in page and "FedTinySAM" in page
    assert page.count("data:image/png;base64,") >= 1 and page.count("data:image/jpeg;base64,") >= 2  # curves; grid, overlays
    assert not re.search(r"(src|href)=['\"]https?://", page)  # nothing fetched from the network
    assert "optic_disc outlined green, optic_cup blue." in page  # the overlay legend names the task's classes
    # predictions: one card per model per client, captioned with the model's name as text (legible at any width)
    captions = re.findall(r"<figure class='card'><figcaption>([^<]*)</figcaption><img src='data:image/jpeg", page)
    labels = [m["label"] for m in json.loads((root / "artifacts/eval/metrics.json").read_text())["models"].values()]
    assert captions.count("ground truth") == 2 and all(captions.count(html.escape(label)) == 2 for label in labels)  # a and h
    # measured times stay off the versioned report: a link to the timing page beside it, which has them
    assert "GFLOPs" in page and "ms/image" not in page and "href='../timings.html'" in page
    # for a reviewer: contents linking every section, the ablation section (or how to get it), provenance
    assert "<nav class='toc'>" in page and "href='#accuracy'" in page and "<h2 id='accuracy'>" in page
    assert "<h2 id='ablation'>" in page and "<h2 id='provenance'>" in page and "code hash (dsfed package)" in page
    assert "inference (ms/image" in (root / "artifacts/timings.html").read_text()
    md = Path(result["markdown"]).read_text()
    assert "| model |" in md and "Did knowledge flow?" in md
    assert any(line.startswith("SAM -> student") for line in result["findings"])
    server_sam = json.loads((root / "artifacts/server_sam/metrics.json").read_text())
    kept = [line for line in result["findings"] if line.startswith("Server SAM:")]
    assert len(kept) == 1 and ("the foundation is the teacher" in kept[0]) == (server_sam["selected_epoch"] == 0)
    label = json.loads((root / "artifacts/eval/metrics.json").read_text())["models"]["server_sam"]["label"]
    assert ("the foundation: real validation kept it" in label) == (server_sam["selected_epoch"] == 0)


def test_the_report_names_clients_left_out_of_rounds(server: tuple[Path, Params], tmp_path: Path) -> None:
    root, params = server
    assert left_out_lines(params, root / "artifacts") == []   # every client finished every round
    # the fixture's student folder holds no metrics.json (no federated run): one that left client a out of two rounds
    metrics = {"communication": {"left_out": {"a": [2, 3]}}}
    (tmp_path / "federated/fedtinysam").mkdir(parents=True)
    (tmp_path / "federated/fedtinysam/metrics.json").write_text(json.dumps(metrics))
    assert left_out_lines(params, tmp_path) == ["FedTinySAM: clients left out of rounds they were sent (a in rounds 2, 3); "
                                                "the model trained without them there (their ledger rows show what was sent)."]


def test_bootstrap_interval_brackets_the_mean_and_narrows_with_n() -> None:
    rng = np.random.default_rng(0)
    small, large = rng.uniform(0.6, 0.9, 10), rng.uniform(0.6, 0.9, 400)
    lo_s, hi_s = bootstrap_ci(small, 1000, 0.95, seed=0)
    lo_l, hi_l = bootstrap_ci(large, 1000, 0.95, seed=0)
    assert lo_s < small.mean() < hi_s and lo_l < large.mean() < hi_l
    assert (hi_l - lo_l) < (hi_s - lo_s) / 3  # about 1/sqrt(40) as wide
    assert bootstrap_ci(np.array([0.5, 0.5, 0.5]), 100, 0.95, seed=0) == (0.5, 0.5)
    assert all(np.isnan(bootstrap_ci(np.array([0.7]), 100, 0.95, seed=0)))


def test_flow_findings_compare_before_and_after() -> None:
    ev = {"models": {
        "fedtinysam": {"label": "FedTinySAM", "clients": {"a": {"dice": 0.7}, "h": {"dice": 0.5}}, "source_mean": {"dice": 0.7}},
        "server_sam": {"label": "SAM", "clients": {"a": {"dice": 0.8}, "h": {"dice": 0.75}}, "source_mean": {"dice": 0.8}},
        "dsfedmed_tiny": {"label": "DSFedMed TinySAM", "clients": {"a": {"dice": 0.75}, "h": {"dice": 0.6}}, "source_mean": {"dice": 0.75}},
        "dsfedmed_sam": {"label": "DSFedMed SAM", "clients": {"a": {"dice": 0.79}, "h": {"dice": 0.76}}, "source_mean": {"dice": 0.79}},
    }}
    found = {f["direction"]: f for f in flow_findings(ev, "fedtinysam")}
    assert found["SAM -> student"]["clients"]["h"] == (0.5, 0.6)
    assert found["student -> SAM"]["source"] == (0.8, 0.79)


def test_ablation_gathers_one_row_per_variant(server: tuple[Path, Params]) -> None:
    from dsfed.stages.ablation import TABLE4, ablation_variants, run_ablation

    root, params = server
    every = ablation_variants(params)
    assert list(every)[:4] == list(TABLE4) and "lam 0" in every and "rate 0.2" in every
    assert "lam 0.5" not in every and "rate 0.5" not in every  # the same settings as the DSFedMed row
    variants = {k: every[k] for k in ("one-way, all samples", "mutual, learnability pool (DSFedMed)")}
    table = run_ablation(params, root / "artifacts", variants)
    assert [r[0] for r in table["rows"]] == list(variants)
    assert [r[1:3] for r in table["rows"]] == [["False", "all"], ["True", "pool"]]
    assert all(r[5] == "undistilled" or r[5].startswith("round ") for r in table["rows"])  # what the guard would ship
    assert table["header"][-2:] == ["student h Dice", "SAM h Dice"]
    runs = root / "artifacts/ablation/runs"
    assert {p.name for p in runs.iterdir()} == {"one-way-all-samples", "mutual-learnability-pool-dsfedmed"}
    assert all((p / "unguarded/tiny/model.json").is_file() and not (p / "checkpoints").exists() for p in runs.iterdir())
    assert "| variant |" in (root / "artifacts/ablation/table.md").read_text()
    # one-way distillation keeps SAM out of the KL terms (and "all" trains on every sample): different SAMs
    a, b = (load_file(str(p / "unguarded/sam/model.safetensors")) for p in sorted(runs.iterdir()))
    assert any(not torch.equal(a[k], b[k]) for k in a)
    page = Path(build_report(params, root / "artifacts")["html"]).read_text()
    assert "Ablation" in page and "one-way, all samples" in page


def test_report_command_prints_where_and_what(server: tuple[Path, Params], tmp_path: Path) -> None:
    import yaml
    from typer.testing import CliRunner

    from dsfed.cli import app

    root, params = server
    build_report(params, root / "artifacts")
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params.model_dump(mode="json")))
    result = CliRunner().invoke(app, ["report", "--artifacts", str(root / "artifacts"), "--params", str(params_file)])
    assert result.exit_code == 0, result.output
    assert "index.html" in result.output and "DSFedMed SAM" in result.output and "SAM -> student" in result.output
    missing = CliRunner().invoke(app, ["report", "--artifacts", str(tmp_path), "--params", str(params_file)])
    assert missing.exit_code != 0


def test_a_registered_producer_shows_up_in_evaluate_and_the_report(server: tuple[Path, Params], tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A method adds its rows by registering a producer: evaluate and the report need no edit."""
    from dsfed.stages.producers import PRODUCERS, ModelEntry

    root, params = server
    art = tmp_path / "artifacts"
    shutil.copytree(root / "artifacts", art)
    torch.manual_seed(5)
    save_model(art / "newmethod", build_model("unet", num_classes=2, output_size=16, input_size=64), "unet", 64)
    ledger = art / "newmethod" / "ledger.csv"
    ledger.write_text("round,client,direction,what,bytes\n1,a,down,global_weights,123\n1,a,up,val_metrics,7\n")

    def new_method(params: Params, artifacts: Path) -> list[ModelEntry]:
        return [ModelEntry("newmethod", "New method (U-Net)", artifacts / "newmethod", "newgroup", [artifacts / "newmethod" / "ledger.csv"])]

    monkeypatch.setitem(PRODUCERS, "newmethod", new_method)
    ev = run_evaluate_stage(params, art)
    assert ev["order"][-1] == "newmethod" and ev["models"]["newmethod"]["group"] == "newgroup"
    assert ev["models"]["newmethod"]["efficiency"]["communication_bytes"] == 123  # evaluation traffic counted apart
    assert set(ev["models"]["newmethod"]["clients"]) == {"a", "h"}
    page = Path(build_report(params, art)["html"]).read_text()
    assert "New method (U-Net)" in page


def test_no_zero_shot_row_for_a_foundation_whose_class_head_is_reinitialised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped foundation knows optic_disc, optic_cup, lesion and polyp: a task with another class starts
    with an untrained head, and a zero-shot row would only measure that (the new user's report showed 0.03);
    a task whose classes it knows (by name) keeps the row."""
    from dsfed.config import load_params
    from dsfed.stages.server_sam import produced_models

    repo = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(repo)  # the params' relative paths (the shipped foundation checkpoint)
    two = load_params(repo / "params.yaml")
    def with_classes(classes: list[str]) -> Params:
        return parse_params({**two.model_dump(mode="json"), "data": {**two.data.model_dump(mode="json"), "classes": classes}}, root=repo)

    assert [e.key for e in produced_models(two, tmp_path)] == ["foundation", "server_sam"]
    assert [e.key for e in produced_models(with_classes(["lesion"]), tmp_path)] == ["foundation", "server_sam"]
    assert [e.key for e in produced_models(with_classes(["liver"]), tmp_path)] == ["server_sam"]


def test_evaluate_reads_unchanged_scores_from_its_cache_and_scores_a_changed_model_again(server: tuple[Path, Params],
                                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from dsfed.stages.producers import ModelEntry

    root, params = server
    art = root / "artifacts"
    outputs = ("metrics.json", "per_image.csv", "predictions.npz")
    before = {name: (art / "eval" / name).read_bytes() for name in outputs}
    loaded: list[str] = []
    load = ModelEntry.load
    monkeypatch.setattr(ModelEntry, "load", lambda self, *args, **kwargs: loaded.append(self.key) or load(self, *args, **kwargs))
    run_evaluate_stage(params, art)   # nothing changed: every score from the cache, the same bytes
    assert loaded == [] and {name: (art / "eval" / name).read_bytes() for name in outputs} == before
    weights = art / "federated/fedtinysam/model.safetensors"
    original = weights.read_bytes()
    try:   # a retrained student: it alone is loaded and scored again
        save_file({k: v * 1.05 if v.is_floating_point() else v for k, v in load_file(str(weights)).items()}, str(weights))
        changed = run_evaluate_stage(params, art)
        assert loaded == ["fedtinysam"]
        old = json.loads(before["metrics.json"])["models"]
        assert changed["models"]["fedtinysam"]["clients"] != old["fedtinysam"]["clients"]
        assert all(changed["models"][k] == v for k, v in old.items() if k != "fedtinysam")
        cached = {name: (art / "eval" / name).read_bytes() for name in outputs}
        shutil.rmtree(art / "eval/cache")   # scored afresh without the cache: the same bytes
        run_evaluate_stage(params, art)
        assert {name: (art / "eval" / name).read_bytes() for name in outputs} == cached
    finally:
        weights.write_bytes(original)
        run_evaluate_stage(params, art)
    assert {name: (art / "eval" / name).read_bytes() for name in outputs} == before
    assert len(list((art / "eval/cache").iterdir())) == len(json.loads(before["metrics.json"])["models"])   # the current models only
