"""The ``report`` stage: ``artifacts/report/index.html`` (self-contained) and ``summary.md``.

Sections: accuracy (Table-2-like), whether knowledge flowed between SAM and the student, efficiency
(Table-3-like), the ablation table when ``dsfed ablate`` has run, learning curves, per-client real vs
synthetic grids with their quality figures, and prediction overlays on test images. Every figure is
rendered here (matplotlib) and inlined, so the file opens offline.
"""

from __future__ import annotations

import csv
import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from dsfed.config import Params
from dsfed.generation.grid import outline_legend
from dsfed.io import atomic_path
from dsfed.report.contents import provenance_rows, with_contents
from dsfed.report.figures import as_jpeg, curves_png, data_uri, overlay_html
from dsfed.report.tables import accuracy_rows, fmt, models_in_order, table_html, table_md
from dsfed.report.timings_page import TIMINGS_PAGE, write_timings_page
from dsfed.stages.federated import LABELS, method_folder
from dsfed.stages.server_sam import foundation_kept, server_sam_metrics

__all__ = ["build_report", "flow_findings", "read_eval"]

CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}tr.dsfedmed td{background:#f4f9ff}
.small{color:#666;font-size:12px}img{max-width:100%}h2{border-bottom:1px solid #ddd;padding-bottom:4px}
.toc{background:#fafafa;border:1px solid #ddd;padding:6px 14px;display:inline-block;font-size:14px}.toc ol{margin:4px 0}
td{white-space:nowrap}td:first-child{white-space:normal}.cards{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-end}
.card{margin:0;width:220px}.card img{width:220px;height:auto;display:block}.card figcaption{font-size:12px;padding-bottom:3px}"""


def read_eval(artifacts: Path) -> dict[str, Any]:
    path = artifacts / "eval" / "metrics.json"
    if not path.is_file():
        from dsfed.errors import DsfedError

        raise DsfedError(f"{path}: not found (run the evaluate stage first: dvc repro evaluate)")
    return json.loads(path.read_text())


def flow_findings(ev: dict[str, Any], student: str) -> list[dict[str, Any]]:
    """Before vs after distillation for both models, per client: did knowledge flow each way?

    Returns one record per direction: ``{"direction", "before", "after", "clients": {c: (before, after)}}``.
    """
    models = ev["models"]
    pairs = [("SAM -> student", student, "dsfedmed_tiny"), ("SAM -> student, unguarded", student, "dsfedmed_tiny_unguarded"),
             ("student -> SAM", "server_sam", "dsfedmed_sam")]
    out = []
    for direction, before, after in pairs:
        if before not in models or after not in models:
            continue
        clients = list(models[before]["clients"])
        out.append({
            "direction": direction, "before": models[before]["label"], "after": models[after]["label"],
            "clients": {c: (models[before]["clients"][c]["dice"], models[after]["clients"][c]["dice"]) for c in clients},
            "source": (models[before]["source_mean"].get("dice"), models[after]["source_mean"].get("dice")),
        })
    return out


def _efficiency_rows(ev: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["model", "parameters (M)", "communication (MB)", "GFLOPs / image (batch 1)", "note"]
    rows = []
    for _, m in models_in_order(ev):
        e = m["efficiency"]
        rows.append([m["label"], fmt(e["parameters"] / 1e6, 2), fmt(e["communication_bytes"] / 1e6, 1),
                     fmt(e.get("gflops_per_image"), 2), e.get("note", "")])
    return header, rows


def _tsv(path: Path) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    if path.is_file():
        with open(path) as fh:
            for row in csv.DictReader(fh, delimiter="\t"):
                xs.append(float(row["step"]))
                ys.append(float(row[path.stem]))
    return xs, ys


def _distill_metrics(artifacts: Path) -> dict[str, Any]:
    path = artifacts / "distill" / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _curves(params: Params, artifacts: Path, distill: dict[str, Any]) -> bytes | None:
    panels = []
    fed = {m: _tsv(artifacts / "federated" / m / "dvclive" / "plots" / "metrics" / "val_dice.tsv") for m in params.federated.methods}
    panels.append(("federated: val Dice (real, source clients)", "round", {m: v for m, v in fed.items() if v[0]}))
    server = artifacts / "server_sam" / "metrics.json"
    if server.is_file():
        hist = json.loads(server.read_text())["history"]
        epochs = [h["epoch"] for h in hist]
        series = {"synthetic val": (epochs, [h["val_dice_mean"] for h in hist])}
        if hist and "real_val_dice" in hist[0]:
            series["real val (selects)"] = (epochs, [h["real_val_dice"] for h in hist])
        panels.append(("server SAM: val Dice (epoch 0: the foundation)", "epoch", series))
    if distill:
        rounds = distill["rounds"]
        r = [x["round"] for x in rounds]
        panels.append(("distillation: synthetic val Dice", "round",
                       {"SAM": (r, [x["val_dice_sam"] for x in rounds]), "student": (r, [x["val_dice_tiny"] for x in rounds])}))
        real = [x for x in rounds if "real_val_dice_tiny" in x]
        if real:
            rr = [x["round"] for x in real]
            panels.append(("distillation: real val Dice (source clients; selects what ships)", "round",
                           {"SAM": (rr, [x["real_val_dice_sam"] for x in real]), "student": (rr, [x["real_val_dice_tiny"] for x in real])}))
        trained = [x for x in rounds if "total" in x]
        panels.append(("distillation: losses on the pool", "round",
                       {k: ([x["round"] for x in trained], [x[k] for x in trained]) for k in ("gt_sam", "gt_tiny", "kl_sam_tiny", "kl_tiny_sam")}))
    panels = [p for p in panels if p[2]]
    return curves_png(panels) if panels else None


def _quality_rows(params: Params, artifacts: Path) -> tuple[list[str], list[list[str]]]:
    header = ["client", "controllability Dice (synthetic)", "judge on real test", "Fréchet synthetic", "Fréchet floor (round trip / as is)", "memorisation flag"]
    rows = []
    for c in params.training_clients:
        path = artifacts / "quality" / c / "quality.json"
        if not path.is_file():
            continue
        q = json.loads(path.read_text())
        ctl, fd, memo = q["controllability"], q["realism_frechet"], q["memorisation"]
        flag = memo.get("pixels", {}).get("label", "–")
        rows.append([c, fmt(ctl["synthetic"].get("dice")), fmt(ctl["real_test"].get("dice")), fmt(fd["synthetic"], 0),
                     f"{fmt(fd['real_heldout_at_generated_size'], 0)} / {fmt(fd['real_heldout'], 0)}", str(flag)])
    return header, rows


def _overlays(ev: dict[str, Any], artifacts: Path) -> dict[str, str]:
    path = artifacts / "eval" / "predictions.npz"
    if not path.is_file():
        return {}
    data = np.load(path)
    out = {}
    for client in [*ev["source_clients"], *([ev["holdout"]] if ev.get("holdout") else [])]:
        if f"image/{client}" not in data or len(data[f"image/{client}"]) == 0:
            continue
        columns = [("ground truth", data[f"truth/{client}"])]
        columns += [(m["label"], data[f"{key}/{client}"]) for key, m in models_in_order(ev) if f"{key}/{client}" in data]
        out[client] = overlay_html(data[f"image/{client}"], columns, f"{client} overlays")
    return out


def _ablation(artifacts: Path) -> tuple[list[str], list[list[str]]] | None:
    path = artifacts / "ablation" / "table.json"
    if not path.is_file():
        return None
    table = json.loads(path.read_text())
    return table["header"], table["rows"]


def _findings_text(findings: list[dict[str, Any]], holdout: str | None) -> list[str]:
    lines = []
    for f in findings:
        b, a = f["source"]
        parts = [f"source mean {fmt(b)} → {fmt(a)} ({a - b:+.3f})" if b is not None and a is not None else ""]
        if holdout and holdout in f["clients"]:
            hb, ha = f["clients"][holdout]
            parts.append(f"held-out {holdout} {fmt(hb)} → {fmt(ha)} ({ha - hb:+.3f})")
        lines.append(f"{f['direction']}: {f['before']} → {f['after']}: " + ", ".join(p for p in parts if p))
    return lines


def guard_lines(metrics: dict[str, Any]) -> list[str]:
    """What the distillation guard decided and why, from distill's metrics (none before it ran)."""
    if "verdict" not in metrics:
        return []
    lines = [f"Distillation guard (selection on the source clients' real validation, only metrics crossed): {metrics['verdict']}."]
    if metrics["teacher"]["weaker"]:
        lines.append("DSFedMed's premise, a teacher that knows more than its student, does not hold on this task: the "
                     "distilled student can only learn the teacher's mistakes (`distill.weak_teacher: skip` skips the rounds).")
    return lines


def left_out_lines(params: Params, artifacts: Path) -> list[str]:
    """One line per federated method whose run left a client out of some rounds (it got the global weights and
    sent nothing back: its node was down or its round failed), from the method's ``communication.left_out``."""
    lines = []
    for method in params.federated.methods:
        path = method_folder(artifacts, method) / "metrics.json"
        left_out = json.loads(path.read_text()).get("communication", {}).get("left_out") if path.is_file() else None
        if left_out:
            who = "; ".join(f"{client} in round{'s' if len(r) > 1 else ''} {', '.join(map(str, r))}" for client, r in left_out.items())
            lines.append(f"{LABELS.get(method, method)}: clients left out of rounds they were sent ({who}); the model "
                         "trained without them there (their ledger rows show what was sent).")
    return lines


def server_sam_lines(artifacts: Path) -> list[str]:
    """Which epoch of the synthetic fine-tune became the teacher, and on what evidence (none before it ran)."""
    m = server_sam_metrics(artifacts)
    if not m:
        return []
    real, epoch = m.get("real_val_dice"), m["selected_epoch"]
    if not real:
        return [f"Server SAM: epoch {epoch} kept on the synthetic validation sets alone (`server_sam.select: synthetic`)."]
    if foundation_kept(m):
        best = fmt(max(h["real_val_dice"] for h in m["history"][1:]))
        return [f"Server SAM: no epoch of the synthetic fine-tune beat the foundation on the source clients' real "
                f"validation (foundation {fmt(real['foundation'])}, best epoch {best}): the foundation is the teacher."]
    return [f"Server SAM: epoch {epoch} of the synthetic fine-tune kept on the source clients' real validation "
            f"({fmt(real['selected'])}; the foundation {fmt(real['foundation'])})."]


def _outside_note(params: Params) -> str:
    """Clients outside a pinned federation: they joined after the federated models were trained and reach
    the student only through their synthetic sets and distillation."""
    outside = [c for c in params.clients if c not in params.federation]
    if not outside:
        return ""
    them = "it" if len(outside) == 1 else "them"
    return (f"; {', '.join(outside)} joined outside the federation (<code>federated.clients</code>): the federated "
            f"models never saw {them}, DSFedMed reaches {them} through the synthetic sets and distillation")


def build_report(params: Params, artifacts: str | Path, params_path: str | Path = "params.yaml") -> dict[str, Any]:
    """Write ``artifacts/report/index.html`` and ``summary.md``; returns their paths (``html``, ``markdown``),
    the Markdown text (``summary``), the flow findings and the accuracy table. ``params_path``: the file whose
    hash the provenance table shows."""
    artifacts = Path(artifacts)
    out = artifacts / "report"
    ev = read_eval(artifacts)
    acc_header, acc_rows, groups = accuracy_rows(ev)
    eff_header, eff_rows = _efficiency_rows(ev)
    distill = _distill_metrics(artifacts)
    findings = (_findings_text(flow_findings(ev, params.distill.student), ev.get("holdout")) + left_out_lines(params, artifacts)
                + server_sam_lines(artifacts) + guard_lines(distill))
    q_header, q_rows = _quality_rows(params, artifacts)
    ablation = _ablation(artifacts)
    curves = _curves(params, artifacts, distill)
    overlays = _overlays(ev, artifacts)

    holdout = ev.get("holdout")
    intro = (f"Test Dice per image (mean ± std over images), the source-client mean with its {int(ev['ci'] * 100)} % bootstrap "
             f"interval ({ev['bootstrap']} resamples, mean of the per-client intervals), IoU and HD95 (pixels at the mask size)"
             + (f"; {holdout} is held out: no model trained or was selected on it." if holdout else "."))
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>dsfed report</title><style>{CSS}</style></head><body>",
             "<h1>dsfed: DSFedMed report</h1>",
             f"<p class='small'>{len(params.clients)} clients ({', '.join(params.clients)}){_outside_note(params)}; classes {', '.join(params.data.classes)}; "
             f"images {params.data.image_size} px, masks {params.data.mask_size} px; device {html.escape(ev['device'])}.</p>",
             "<h2>Accuracy</h2>", f"<p class='small'>{html.escape(intro)}</p>",
             table_html(acc_header, acc_rows, groups),
             "<h2>Did knowledge flow?</h2><ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in findings) + "</ul>",
             "<h2>Efficiency</h2>", "<p class='small'>Communication: every byte the method's ledgers recorded (FedAvg rounds; for "
             "DSFedMed also the ControlNet and mask uploads, the synthetic sets sent down for the clients' audits, and the distilled "
             "model sent to every client). GFLOPs: floating-point operations of one batch-1 forward pass (the same on every "
             "machine). Times measured on this machine (stage wall times, inference latency) change from run to run, so they "
             f"are kept out of this versioned report: <a href='../{TIMINGS_PAGE}'>{TIMINGS_PAGE}</a> beside it.</p>",
             table_html(eff_header, eff_rows)]
    parts += ["<h2>Ablation</h2>", table_html(*ablation) if ablation else
              "<p class='small'>No ablation yet: <code>dsfed ablate</code> (Table 4's rows; <code>--sweep lam|rate|batch_topk</code>) "
              "runs the distillation variants and writes <code>artifacts/ablation/table.json</code>, which this section shows "
              "(<code>dsfed report --rebuild</code> redraws the report).</p>"]
    if curves:
        parts += ["<h2>Learning curves</h2>", f"<img src='{data_uri(curves)}' alt='learning curves'>"]
    if q_rows:
        parts += ["<h2>Synthetic data</h2>", table_html(q_header, q_rows),
                  "<p class='small'>Grid rows: masks, the real image of each mask, synthetic, synthetic outlined, augmented masks.</p>"]
        for c in params.training_clients:
            grid = artifacts / "quality" / c / "grid.png"
            if grid.is_file():
                parts.append(f"<h3>{html.escape(c)}</h3><img src='{data_uri(as_jpeg(grid.read_bytes()), 'image/jpeg')}' alt='{html.escape(c)} grid'>")
    if overlays:
        parts.append(f"<h2>Predictions on test images</h2><p class='small'>{html.escape(outline_legend(list(params.data.classes)))}</p>")
        for c, cards in overlays.items():
            parts.append(f"<h3>{html.escape(c)}{' (held out)' if c == holdout else ''}</h3>{cards}")
    from dsfed.stages.report_samfed import samfed_section

    samfed_html, samfed_md = samfed_section(params, artifacts)
    parts += [*samfed_html, "<h2>Provenance</h2>", table_html(["what", "value"], provenance_rows(Path(params_path), Path.cwd())),
              f"<p class='small'>When each stage ran and how long it took: <a href='../{TIMINGS_PAGE}'>{TIMINGS_PAGE}</a>.</p>",
              "</body></html>"]

    md = ["# dsfed: DSFedMed report", "", intro, "", "## Accuracy", "", table_md(acc_header, acc_rows), "",
          "## Did knowledge flow?", "", *[f"- {x}" for x in findings], "", "## Efficiency", "", table_md(eff_header, eff_rows), ""]
    md += [f"Times measured on this machine: `{artifacts / TIMINGS_PAGE}` (not versioned).", ""]
    if ablation:
        md += ["## Ablation", "", table_md(*ablation), ""]
    if q_rows:
        md += ["## Synthetic data", "", table_md(q_header, q_rows), ""]
    md += [*samfed_md, f"The full report with figures: `{out / 'index.html'}`", ""]
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "index.html", overwrite=True) as tmp:
        tmp.write_text(with_contents("\n".join(parts)))
    with atomic_path(out / "summary.md", overwrite=True) as tmp:
        tmp.write_text("\n".join(md))
    write_timings_page(artifacts, CSS)
    return {"html": str(out / "index.html"), "markdown": str(out / "summary.md"), "summary": "\n".join(md), "findings": findings,
            "accuracy": {"header": acc_header, "rows": acc_rows}}
