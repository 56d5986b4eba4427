"""Print a scenario's test-Dice table (Markdown) with 95 % bootstrap CIs, from a finished pipeline.

Usage: ``python scripts/scenario_table.py [PROJECT_ROOT]``. Reads ``artifacts/eval/metrics.json`` and
``artifacts/eval/per_image.csv``. The source column is the mean of the source clients' means; its interval
resamples images within each source client (1,000 draws, seed 0), as the per-client intervals do.
"""

from __future__ import annotations

import csv
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np


def main(root: Path) -> str:
    metrics = json.loads((root / "artifacts/eval/metrics.json").read_text())
    per_image: dict[tuple[str, str], list[float]] = defaultdict(list)
    with (root / "artifacts/eval/per_image.csv").open() as fh:
        for row in csv.DictReader(fh):
            dice = [float(v) for k, v in row.items() if k.startswith("dice_") and v not in ("", "nan")]
            per_image[(row["model"], row["client"])].append(float(np.mean(dice)) if dice else float("nan"))
    rng = np.random.default_rng(0)
    lines = [f"| model | source mean ({', '.join(metrics['source_clients'])}) | held-out {metrics['holdout']} |", "|---|---|---|"]
    for key in metrics["order"]:
        model = metrics["models"][key]
        parts = [np.array(per_image[(key, c)]) for c in metrics["source_clients"]]
        draws = np.mean([[np.nanmean(p[rng.integers(0, len(p), len(p))]) for _ in range(1000)] for p in parts], axis=0)
        low, high = np.percentile(draws, [2.5, 97.5])
        held = model.get("holdout") or {}
        held_text = f"{held['dice']:.3f} [{held['dice_ci'][0]:.3f}, {held['dice_ci'][1]:.3f}]" if held else "-"
        lines.append(f"| {model['label']} | {model['source_mean']['dice']:.3f} [{low:.3f}, {high:.3f}] | {held_text} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".")))
