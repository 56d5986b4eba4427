"""Benchmark: random-access samples/s from a Zarr client store vs decoding the same samples from PNG files.

``zarr_*``: reads from the store's arrays on disk (what a store over ``IN_MEMORY_BYTES`` gets);
``memory_load_ms``: what ``ClientStore`` pays once to serve a small store from memory (its images and masks
read whole), after which a sample is an array view.

Prints one JSON object. Usage: ``python benchmarks/store_access.py [--n 200] [--reads 2000] [--sizes 128 256]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr
from PIL import Image

from dsfed.config import parse_params
from dsfed.data.store import ClientStore, build_client_store

REPO = Path(__file__).resolve().parents[1]


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _write_pngs(store: ClientStore, folder: Path) -> None:
    """One RGB PNG per image, one grey PNG per mask (FedDG-style values: 0 cup, 128 rim, 255 background)."""
    folder.mkdir()
    for i in range(len(store)):
        Image.fromarray(store.images[i].transpose(1, 2, 0)).save(folder / f"{i:05d}.png")
        mask = store.masks[i]
        grey = np.full(mask.shape[1:], 255, dtype=np.uint8)
        grey[mask[0] > 0] = 128
        grey[mask[1] > 0] = 0
        Image.fromarray(grey).save(folder / f"{i:05d}_mask.png")


def _read_png(folder: Path, i: int) -> tuple[np.ndarray, np.ndarray]:
    image = np.asarray(Image.open(folder / f"{i:05d}.png").convert("RGB")).transpose(2, 0, 1)
    grey = np.asarray(Image.open(folder / f"{i:05d}_mask.png"))
    return image, np.stack([grey <= 128, grey == 0]).astype(np.uint8)


def _rate(read, order: np.ndarray) -> float:  # noqa: ANN001
    read(int(order[0]))  # warm-up
    start = time.perf_counter()
    for i in order:
        read(int(i))
    return len(order) / (time.perf_counter() - start)


def bench(size: int, n: int, reads: int, work: Path) -> dict[str, object]:
    (work / "sites.yaml").write_text((REPO / "data/phantom/sites.yaml").read_text())
    params = parse_params(
        {"data": {"image_size": size, "mask_size": size // 2},
         "clients": {"bench": {"source": {"kind": "phantom", "path": "sites.yaml", "site": "site_a", "n": n}}}},
        root=work,
    )
    start = time.perf_counter()
    out = build_client_store(params, "bench", work / f"s{size}.zarr", root=work, progress=False)
    build_s = time.perf_counter() - start
    store = ClientStore(out)
    pngs = work / f"png{size}"
    _write_pngs(store, pngs)
    order = np.random.default_rng(0).integers(0, n, size=reads)
    on_disk = zarr.open_group(out, mode="r")
    images, masks = on_disk["images"], on_disk["masks"]
    start = time.perf_counter()
    in_memory = ClientStore(out)
    in_memory.images, in_memory.masks  # noqa: B018 (read whole when small)
    memory_load_s = time.perf_counter() - start
    zarr_rate = _rate(lambda i: (images[i], masks[i]), order)
    png_rate = _rate(lambda i: _read_png(pngs, i), order)
    # a batch of 8 consecutive samples in one call: zarr-python's fixed per-call cost is shared
    starts = order[order <= n - 8][: max(reads // 8, 1)]
    zarr_batch_rate = 8 * _rate(lambda i: (images[i : i + 8], masks[i : i + 8]), starts)
    raw = n * (3 * size * size + 2 * (size // 2) ** 2)
    return {
        "image_size": size,
        "mask_size": size // 2,
        "samples": n,
        "random_reads": reads,
        "zarr_samples_per_s": round(zarr_rate, 1),
        "png_samples_per_s": round(png_rate, 1),
        "zarr_speedup": round(zarr_rate / png_rate, 2),
        "zarr_batch8_samples_per_s": round(zarr_batch_rate, 1),
        "memory_load_ms": round(memory_load_s * 1e3, 1),
        "in_memory": isinstance(in_memory.images, np.ndarray),
        "zarr_bytes": _dir_bytes(out),
        "png_bytes": _dir_bytes(pngs),
        "raw_bytes": raw,
        "prepare_samples_per_s": round(n / build_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="samples in the store")
    parser.add_argument("--reads", type=int, default=2000, help="random sample reads per method")
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512], help="image sizes (mask = size/2)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dsfed-bench-"))
    try:
        results = [bench(s, args.n, args.reads, work) for s in args.sizes]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({"benchmark": "store_access", "machine": platform.machine(), "cpus": __import__("os").cpu_count(),
                      "results": results}, indent=2))


if __name__ == "__main__":
    main()
