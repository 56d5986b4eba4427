"""The report's SAM-Fed section: every variant's test Dice with intervals (homogeneous and heterogeneous), the
expected ordering checked, pseudo-label quality per round, communication per client, and overlays.

Reads only what the SAM-Fed stages wrote under ``artifacts/samfed/`` (``eval/`` and each variant's metrics).
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from dsfed.config import Params
from dsfed.generation.grid import outline_legend
from dsfed.report.figures import curves_png, data_uri, overlay_html
from dsfed.report.tables import accuracy_rows, fmt, table_html, table_md
from dsfed.samfed.task import samfed_root

__all__ = ["ordering_lines", "samfed_section"]

UPPER, SAMFED, NAIVE, LOWER = "supervised", "samfed", "selftrain", "public_only"


def _ordered(ev: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The models in evaluation order (metrics.json sorts its keys)."""
    return [(k, ev["models"][k]) for k in ev.get("order", ev["models"]) if k in ev["models"]]


def _eval(artifacts: Path) -> dict[str, Any] | None:
    path = samfed_root(artifacts) / "eval" / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _summary(artifacts: Path) -> dict[str, Any]:
    """``eval/variants.json``: each variant's curve, selection, communication (and a heterogeneous one's client-side
    test), and the teacher's metrics, as ``samfed_evaluate`` gathered them."""
    path = samfed_root(artifacts) / "eval" / "variants.json"
    return json.loads(path.read_text()) if path.is_file() else {"variants": {}, "teacher": {}}


def _variant(artifacts: Path, name: str) -> dict[str, Any] | None:
    found: dict[str, Any] | None = _summary(artifacts)["variants"].get(name)
    return found


def _hetero_rows(params: Params, artifacts: Path) -> tuple[list[str], list[list[str]]]:
    """Heterogeneous variants: each client tested with its own model at the client (Dice [95 % CI], its architecture)."""
    clients = list(params.samfed.clients)
    header = ["variant", *[f"{c} Dice [CI]" for c in clients], "mean Dice", "communication / client (MB)"]
    rows = []
    for name, spec in params.samfed.variants.items():
        m = _variant(artifacts, name)
        if spec.aggregation != "rcrf" or m is None:
            continue
        cells, means = [], []
        for c in clients:
            t = m["test"].get(c, {})
            means.append(t.get("dice", float("nan")))
            cells.append(f"{fmt(t.get('dice'))} [{fmt(t.get('dice_ci_low'), 2)}, {fmt(t.get('dice_ci_high'), 2)}] "
                         f"({m['architectures'][c]})")
        rows.append([name, *cells, fmt(float(np.nanmean(means))), fmt(m["communication"]["per_client"] / 1e6, 1)])
    return header, rows


def _hd95_rows(params: Params, ev: dict[str, Any], artifacts: Path) -> tuple[list[str], list[list[str]]]:
    """HD95 (pixels at the mask size) per client for every model, homogeneous and heterogeneous."""
    clients = list(params.samfed.clients)
    header = ["model", *[f"{c} HD95" for c in clients]]
    rows = [[m["label"], *[fmt(m["clients"].get(c, {}).get("hd95"), 1) for c in clients]] for _, m in _ordered(ev)]
    for name, spec in params.samfed.variants.items():
        v = _variant(artifacts, name)
        if spec.aggregation == "rcrf" and v is not None:
            rows.append([f"{name} (each client's own model)", *[fmt(v["test"].get(c, {}).get("hd95"), 1) for c in clients]])
    return header, rows


def _source_dice(ev: dict[str, Any], key: str) -> float | None:
    model = ev["models"].get(key)
    return None if model is None else model["source_mean"].get("dice")


def ordering_lines(params: Params, ev: dict[str, Any]) -> list[str]:
    """Whether upper bound >= SAM-Fed > naive self-training >= public-only holds on the clients' mean test Dice, for each
    homogeneous family (``samfed``/``supervised``/``selftrain`` plus a common suffix, e.g. ``_nn``)."""
    variants = params.samfed.variants
    suffixes = [name.removeprefix(SAMFED) for name in variants if name.startswith(SAMFED) and variants[name].aggregation == "fedavg"
                and f"{UPPER}{name.removeprefix(SAMFED)}" in variants]
    lines = []
    for suffix in suffixes or [""]:
        arch = variants[SAMFED + suffix].model if SAMFED + suffix in variants else None
        keys = {"upper bound": UPPER + suffix, "SAM-Fed": SAMFED + suffix, "self-training": NAIVE + suffix, "public only": f"{LOWER}_{arch}"}
        dice = {label: _source_dice(ev, key) for label, key in keys.items()}
        if any(v is None for v in dice.values()):
            lines.append("The expected ordering needs the supervised, samfed, selftrain variants and the public-only model: "
                         f"missing {', '.join(k for k, v in dice.items() if v is None)}.")
            continue
        u, s, n, p = (float(dice[k]) for k in keys)  # type: ignore[arg-type]
        holds = [u >= s, s > n, n >= p]
        text = f"upper bound {u:.3f} {'>=' if holds[0] else '<'} SAM-Fed {s:.3f} {'>' if holds[1] else '<='} " \
               f"self-training {n:.3f} {'>=' if holds[2] else '<'} public only {p:.3f}"
        lines.append(f"Expected ordering with {arch} clients (mean test Dice over the clients) "
                     f"{'holds' if all(holds) else 'does NOT hold'}: {text}.")
    return lines


def premise_lines(params: Params, ev: dict[str, Any], artifacts: Path) -> list[str]:
    """What the numbers say about SAM-Fed's premises: is the teacher stronger than the students, does the agreement
    mask improve on the teacher's own labels, and does SAM-Fed beat the strongest public-only model."""
    lines = []
    models = ev["models"]
    teacher = _source_dice(ev, "teacher")
    oracle = {n for n, v in params.samfed.variants.items() if v.pseudo == "labels"}   # upper bounds read the clients' labels
    students = {k: m["source_mean"].get("dice") for k, m in models.items() if k != "teacher" and k not in oracle}
    if teacher is not None and students:
        best = max(students, key=lambda k: students[k] or 0.0)
        lines.append(f"Teacher vs students: the SAM teacher scores {teacher:.3f} on the clients' tests, the best deployed model "
                     f"{students[best]:.3f} ({models[best]['label']}); the teacher "
                     f"{'leaves room to teach' if teacher > (students[best] or 0) else 'is NOT stronger than the students'}.")
    curves = {n: _variant(artifacts, n) for n in (SAMFED, "no_agreement", "sam_pseudo")}
    agree = curves.get(SAMFED)
    alone = curves.get("no_agreement") or curves.get("sam_pseudo")
    if agree and alone:
        a = [p["pl_test_dice"] for p in agree["curve"] if "pl_test_dice" in p]
        t = [p["pl_test_dice"] for p in alone["curve"] if "pl_test_dice" in p]
        if a and t:
            verdict = "improves on" if np.mean(a) > np.mean(t) else "is worse than"
            lines.append(f"Agreement mask: its pseudo-labels' Dice on the test pixels averages {np.mean(a):.3f} over the rounds, the "
                         f"teacher's alone {np.mean(t):.3f}: the agreement {verdict} the teacher's labels (where the global model "
                         "is the more confident, its label replaces the teacher's).")
    public = {k: m["source_mean"].get("dice") for k, m in models.items() if k.startswith(f"{LOWER}_")}
    ours = {k: _source_dice(ev, k) for k, v in params.samfed.variants.items() if k.startswith(SAMFED) and v.aggregation == "fedavg"}
    ours = {k: v for k, v in ours.items() if v is not None}
    if public and ours:
        best = max(public, key=lambda k: public[k] or 0.0)
        top = max(ours, key=lambda k: ours[k] or 0.0)
        lines.append(f"Strongest simple baseline: {models[best]['label']} scores {public[best]:.3f}; the best homogeneous SAM-Fed, "
                     f"{models[top]['label']}, {ours[top]:.3f} ({'above' if (ours[top] or 0) > (public[best] or 0) else 'below'} it).")
    return lines


def _pseudo_rows(params: Params, artifacts: Path) -> tuple[list[str], list[list[str]], bytes | None]:
    """Per variant that uses the teacher: per round, the share of test pixels kept, their accuracy and Dice, tau."""
    header = ["variant", "round", "kept share", "accuracy (kept)", "Dice (kept)", "threshold"]
    rows: list[list[str]] = []
    series_dice: dict[str, tuple[list[float], list[float]]] = {}
    series_kept: dict[str, tuple[list[float], list[float]]] = {}
    for name in params.samfed.variants:
        m = _variant(artifacts, name)
        if m is None:
            continue
        points = [p for p in m["curve"] if "pl_test_kept" in p]
        for p in points:
            rows.append([name, str(p["round"]), fmt(p["pl_test_kept"]), fmt(p["pl_test_accuracy"]), fmt(p.get("pl_test_dice")),
                         fmt(p.get("tau"), 2)])
        if points:
            xs = [float(p["round"]) for p in points]
            series_dice[name] = (xs, [float(p.get("pl_test_dice", float("nan"))) for p in points])
            series_kept[name] = (xs, [float(p["pl_test_kept"]) for p in points])
    figure = curves_png([("pseudo-label Dice on kept test pixels", "round", series_dice),
                         ("share of test pixels kept", "round", series_kept)]) if series_dice else None
    return header, rows, figure


def _comm_rows(params: Params, ev: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    n = max(len(params.samfed.clients), 1)
    header = ["model", "communication / client (MB)", "parameters (M)", "GFLOPs / image", "note"]
    rows = [[m["label"], fmt(m["efficiency"]["communication_bytes"] / n / 1e6, 1), fmt(m["efficiency"]["parameters"] / 1e6, 2),
             fmt(m["efficiency"].get("gflops_per_image"), 2), m["efficiency"].get("note", "")] for _, m in _ordered(ev)]
    return header, rows


def _overlays(ev: dict[str, Any], artifacts: Path) -> dict[str, str]:
    path = samfed_root(artifacts) / "eval" / "predictions.npz"
    if not path.is_file():
        return {}
    data = np.load(path)
    out = {}
    for client in ev["source_clients"]:
        if f"image/{client}" not in data or not len(data[f"image/{client}"]):
            continue
        columns = [("ground truth", data[f"truth/{client}"])]
        columns += [(m["label"], data[f"{key}/{client}"]) for key, m in _ordered(ev) if f"{key}/{client}" in data]
        out[client] = overlay_html(data[f"image/{client}"], columns, f"{client} overlays")
    return out


def samfed_section(params: Params, artifacts: str | Path) -> tuple[list[str], list[str]]:
    """(HTML parts, Markdown lines) of the SAM-Fed section; both empty when SAM-Fed has not been evaluated."""
    artifacts = Path(artifacts)
    ev = _eval(artifacts)
    if ev is None or not params.samfed.enabled:
        return [], []
    cfg = params.samfed
    teacher = _summary(artifacts)["teacher"]
    intro = (f"SAM-Fed task: {len(cfg.clients)} unlabelled clients ({', '.join(cfg.clients)}; their masks are read for this "
             f"table only), a labelled public set at the server, classes {', '.join(cfg.data.classes)}. Homogeneous variants "
             "average one architecture (FedAvg) and are tested here with the server's model on every client's test split; "
             "heterogeneous ones (RC + RF) never move weights, so each client tests its own model and sends the numbers. "
             f"Teacher: LoRA rank {cfg.teacher.lora.rank} on {', '.join(cfg.teacher.lora.targets)}, public val Dice "
             f"{fmt(teacher.get('foundation_val_dice'))} before fine-tuning, {fmt(teacher.get('val_dice'))} after "
             f"(epoch {teacher.get('selected_epoch', '?')}). Selection: public val split (the clients have no labels).")
    acc_header, acc_rows, _ = accuracy_rows(ev)
    het_header, het_rows = _hetero_rows(params, artifacts)
    findings = ordering_lines(params, ev) + premise_lines(params, ev, artifacts)
    pl_header, pl_rows, pl_figure = _pseudo_rows(params, artifacts)
    comm_header, comm_rows = _comm_rows(params, ev)
    parts = ["<h1 id='samfed'>SAM-Fed: SAM-guided federated semi-supervised segmentation</h1>",
             f"<p class='small'>{html.escape(intro)}</p>", "<h2>SAM-Fed accuracy (homogeneous, server-side test)</h2>",
             table_html(acc_header, acc_rows), "<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in findings) + "</ul>"]
    md = ["# SAM-Fed", "", intro, "", "## Accuracy (homogeneous)", "", table_md(acc_header, acc_rows), "", *[f"- {x}" for x in findings], ""]
    if het_rows:
        parts += ["<h2>SAM-Fed heterogeneous clients (RC + RF, each client's own model)</h2>", table_html(het_header, het_rows)]
        md += ["## Heterogeneous clients (RC + RF)", "", table_md(het_header, het_rows), ""]
    hd_header, hd_rows = _hd95_rows(params, ev, artifacts)
    parts += ["<h3>HD95 per client (pixels at the mask size)</h3>", table_html(hd_header, hd_rows)]
    md += ["### HD95 per client (pixels)", "", table_md(hd_header, hd_rows), ""]
    if pl_rows:
        parts += ["<h2>Pseudo-label quality per round</h2><p class='small'>On each client's test images (masks read for the report "
                  "only), pooled over clients: the share of pixels the rule keeps, their accuracy and foreground Dice.</p>",
                  table_html(pl_header, pl_rows)]
        if pl_figure:
            parts.append(f"<img src='{data_uri(pl_figure)}' alt='pseudo-label quality'>")
        md += ["## Pseudo-label quality per round", "", table_md(pl_header, pl_rows), ""]
    parts += ["<h2>SAM-Fed communication</h2>", table_html(comm_header, comm_rows)]
    md += ["## Communication", "", table_md(comm_header, comm_rows), ""]
    overlays = _overlays(ev, artifacts)
    if overlays:
        parts.append(f"<h2>SAM-Fed predictions on test images</h2><p class='small'>"
                     f"{html.escape(outline_legend(list(cfg.data.classes)))}</p>")
    for client, cards in overlays.items():
        parts.append(f"<h3>{html.escape(client)}</h3>{cards}")
    return parts, md
