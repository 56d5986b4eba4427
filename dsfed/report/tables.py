"""Report tables: number formatting, the accuracy table of ``evaluate``'s metrics, HTML and Markdown tables."""

from __future__ import annotations

import html
import math
from typing import Any

import numpy as np

__all__ = ["accuracy_rows", "fmt", "models_in_order", "table_html", "table_md"]


def models_in_order(ev: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(key, model summary) of ``evaluate``'s metrics in table order (the JSON's keys are sorted)."""
    return [(key, ev["models"][key]) for key in ev.get("order", ev["models"])]


def fmt(value: Any, digits: int = 3) -> str:
    """A number for a table cell: ``digits`` decimals for floats, an en dash for a missing or non-finite one."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def accuracy_rows(ev: dict[str, Any]) -> tuple[list[str], list[list[str]], list[str]]:
    """The accuracy table of ``evaluate``'s metrics: (header, rows, each row's group for its CSS class)."""
    clients = ev["source_clients"]
    holdout = ev.get("holdout")
    header = ["model", *[f"{c} Dice" for c in clients], "source Dice [CI]", "source IoU", "source HD95 (px)"]
    if holdout:
        header += [f"{holdout} (held out) Dice [CI]"]
    rows, groups = [], []
    for key, m in models_in_order(ev):
        per = m["clients"]
        row = [m["label"], *[f"{fmt(per[c]['dice'])} ± {fmt(per[c]['dice_std'], 2)}" for c in clients]]
        ci = [per[c].get("dice_ci") or [None, None] for c in clients]
        lo = np.mean([x[0] for x in ci if x[0] is not None]) if ci else None
        hi = np.mean([x[1] for x in ci if x[1] is not None]) if ci else None
        src = m["source_mean"]
        row += [f"{fmt(src.get('dice'))} [{fmt(float(lo) if lo is not None else None, 2)}, {fmt(float(hi) if hi is not None else None, 2)}]",
                fmt(src.get("iou")), fmt(src.get("hd95"), 1)]
        if holdout:
            h = m.get("holdout") or {}
            hci = h.get("dice_ci") or [None, None]
            row += [f"{fmt(h.get('dice'))} [{fmt(hci[0], 2)}, {fmt(hci[1], 2)}]"]
        rows.append(row)
        groups.append(m["group"])
    return header, rows, groups


def table_html(header: list[str], rows: list[list[str]], classes: list[str] | None = None) -> str:
    """An HTML table, every cell escaped; ``classes`` gives each row a CSS class."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        f"<tr class='{html.escape((classes or [''] * len(rows))[i])}'>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
        for i, row in enumerate(rows)
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def table_md(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown (GitHub) table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
