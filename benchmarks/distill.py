"""Benchmark: one learnability-guided mutual distillation round (scoring all N, training on the pool).

Prints one JSON object. Example::

    python benchmarks/distill.py                                   # demo presets on the CPU
    python benchmarks/distill.py --sam sam_vit_b --tiny tinysam --size 1024 --mask 256 --n 64 --device cuda

Random weights and random data: the figure is speed (what a round costs), not accuracy.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from dsfed.distill.rounds import DistillSettings, distill_round, score_samples
from dsfed.models import build_model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sam", default="sam_demo")
    parser.add_argument("--tiny", default="tinysam_demo")
    parser.add_argument("--tiny-input", type=int, default=128, help="TinySAM's input size (params: fedtinysam input_size)")
    parser.add_argument("--size", type=int, default=128, help="image size")
    parser.add_argument("--mask", type=int, default=64, help="mask size")
    parser.add_argument("--n", type=int, default=192, help="synthetic pairs (3 clients x 64 in the demo)")
    parser.add_argument("--rate", type=float, default=0.5)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    sam = build_model(args.sam, num_classes=2, output_size=args.mask).to(device)
    tiny = build_model(args.tiny, num_classes=2, output_size=args.mask, input_size=args.tiny_input).to(device)
    images = torch.randint(0, 256, (args.n, 3, args.size, args.size), dtype=torch.uint8)
    masks = (torch.rand(args.n, 2, args.mask, args.mask) > 0.8).to(torch.uint8)
    settings = DistillSettings(rate=args.rate, batch_size=args.batch)
    opt_s = torch.optim.Adam(sam.parameters(), lr=1e-4)
    opt_t = torch.optim.Adam(tiny.parameters(), lr=1e-4)

    _sync(device)
    t0 = time.perf_counter()
    score_samples(sam, tiny, images, masks, settings, device)
    _sync(device)
    score_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = distill_round(sam, tiny, opt_s, opt_t, images, masks, settings, torch.Generator().manual_seed(0), device)
    _sync(device)
    round_s = time.perf_counter() - t0
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    print(json.dumps({
        "benchmark": "distill_round",
        "sam": args.sam, "tiny": args.tiny, "parameters": {"sam": count(sam), "tiny": count(tiny)},
        "image_size": args.size, "mask_size": args.mask, "n": args.n, "pool": len(result.pool), "batch": args.batch,
        "device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine(),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "score_all_s": round(score_s, 2), "round_s": round(round_s, 2),
        "train_s_per_pool_sample": round((round_s - score_s) / max(len(result.pool), 1), 4),
    }, indent=2))


if __name__ == "__main__":
    main()
