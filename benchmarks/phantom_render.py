"""Benchmark: phantom rendering ms/sample per task, site and size (the cost of building phantom stores).

Prints one JSON object. Usage: ``python benchmarks/phantom_render.py [--samples 20]``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from dsfed.config import DataConfig
from dsfed.data.settings import PhantomSource
from dsfed.data.sources.phantom import build_phantom

REPO = Path(__file__).resolve().parents[1]
CASES = [("fundus", "site_a", "full"), ("fundus", "site_b", "full"), ("fundus", "site_a", "roi"), ("skin", "clinic_a", "full")]


def ms_per_sample(task: str, site: str, view: str, size: int, samples: int) -> float:
    spec = PhantomSource(kind="phantom", task=task, path=Path("data/phantom/sites.yaml"), site=site, n=samples + 1, view=view)
    classes = ["optic_disc", "optic_cup"] if task == "fundus" else ["lesion"]
    source = build_phantom(spec, DataConfig(classes=classes, image_size=size, mask_size=size // 2), REPO, "bench")
    items = source.items()
    source.load(items[0])  # warm-up (imports, caches)
    start = time.perf_counter()
    for item in items[1:]:
        source.load(item)
    return (time.perf_counter() - start) / samples * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20, help="samples per case")
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    args = parser.parse_args()
    results = [
        {"task": t, "site": s, "view": v, "image_size": size, "ms_per_sample": round(ms_per_sample(t, s, v, size, args.samples), 1)}
        for t, s, v in CASES
        for size in args.sizes
    ]
    print(json.dumps({"benchmark": "phantom_render", "results": results}, indent=2))


if __name__ == "__main__":
    main()
