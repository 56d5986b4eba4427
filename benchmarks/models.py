"""Benchmark: per model preset, training samples/s, inference ms/image, FLOPs and achieved FLOP/s; payload bytes.

Prints one JSON object. Examples::

    python benchmarks/models.py                                  # demo presets on the CPU
    python benchmarks/models.py --presets sam_vit_b tinysam --device cuda --amp   # real presets on a GPU
    python benchmarks/models.py --comm-only                      # bytes per round for the real presets

Communication is set beside DSFedMed's reported totals over 100 rounds (one client, up + down):
FedSAM 71,538 MB and FedTinySAM 7,770 MB.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from dsfed.federated.serialize import payload_size
from dsfed.models import build_model

DEMO = ["tinysam_demo", "sam_demo", "unet", "nnunet"]
PAPER_MB_100_ROUNDS = {"sam_vit_b": 71_538, "tinysam": 7_770}
MiB = 1024 * 1024


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int) -> float:
    """FLOP/s of an n x n x n matrix product (the machine's practical peak for that dtype)."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    _sync(device)
    reps = 10 if device.type == "cuda" else 3
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - start)


def flops(model: torch.nn.Module, x: torch.Tensor, train: bool) -> int:
    """Forward (or forward + backward) FLOPs for batch ``x``, counted by torch's FlopCounterMode."""
    with FlopCounterMode(display=False) as counter:
        if train:
            model(x).float().mean().backward()
        else:
            with torch.inference_mode():  # no_grad trips FlopCounterMode's module tracker on SAM's prompt encoder
                model(x)
    return counter.get_total_flops()


def train_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, amp: bool) -> Callable[[], None]:
    """A function doing one Adam step (lr 1e-4) of BCE between ``model(x)`` and masks ``y``, bf16 autocast when ``amp``."""
    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    cast = torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp)

    def step() -> None:
        with cast:
            logits = model(x)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), y)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    return step


def bench_preset(name: str, device: torch.device, batch: int, steps: int, amp: bool) -> dict[str, Any]:
    model = build_model(name, num_classes=2, output_size=64).to(device)
    size = model.input_size
    x = torch.rand(batch, 3, size, size, device=device)
    step = train_step(model, x, (torch.rand(batch, 2, 64, 64, device=device) > 0.8).float(), amp)
    cast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp)
    model.train()
    step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    step_s = (time.perf_counter() - start) / steps

    model.eval()
    one = x[:1]
    with torch.no_grad(), cast:
        model(one)
        _sync(device)
        reps = max(steps, 3)
        start = time.perf_counter()
        for _ in range(reps):
            model(one)
        _sync(device)
    infer_ms = (time.perf_counter() - start) / reps * 1e3

    fwd = flops(model, one, train=False)
    train_flops = flops(model.train(), x, train=True) / batch
    return {
        "preset": name,
        "input_size": size,
        "parameters_M": round(model.num_parameters() / 1e6, 3),
        "batch": batch,
        "train_samples_per_s": round(batch / step_s, 2),
        "inference_ms_per_image": round(infer_ms, 2),
        "forward_GFLOP_per_sample": round(fwd / 1e9, 3),
        "train_GFLOP_per_sample": round(train_flops / 1e9, 3),
        "train_achieved_GFLOP_per_s": round(train_flops * batch / step_s / 1e9, 1),
    }


def communication(name: str) -> dict[str, Any]:
    """Bytes one client sends and receives per round (fp32 safetensors of the whole model), and over 100 rounds."""
    model = build_model(name, num_classes=1, output_size=256)
    per_transfer = payload_size(model.state_dict())
    total_mib = 2 * per_transfer * 100 / MiB
    row = {"preset": name, "bytes_per_transfer": per_transfer, "MiB_per_round_up_and_down": round(2 * per_transfer / MiB, 1),
           "MiB_100_rounds": round(total_mib)}
    if name in PAPER_MB_100_ROUNDS:
        row["paper_MB_100_rounds"] = PAPER_MB_100_ROUNDS[name]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=DEMO, help="model presets to time")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per preset")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast")
    parser.add_argument("--comm-only", action="store_true", help="only the communication table")
    parser.add_argument("--comm-presets", nargs="+", default=["sam_vit_b", "tinysam", "sam_demo", "tinysam_demo", "unet", "nnunet"])
    args = parser.parse_args()
    device = torch.device(args.device)
    out: dict[str, Any] = {"benchmark": "models", "machine": platform.machine(), "device": str(device),
                           "torch": torch.__version__, "threads": torch.get_num_threads(), "amp_bf16": args.amp}
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
    if not args.comm_only:
        dtype = torch.bfloat16 if args.amp else torch.float32
        out["matmul_peak_GFLOP_per_s"] = round(matmul_peak(device, dtype, 8192 if device.type == "cuda" else 2048) / 1e9, 1)
        out["presets"] = [bench_preset(p, device, args.batch, args.steps, args.amp) for p in args.presets]
        for row in out["presets"]:
            row["fraction_of_matmul_peak"] = round(row["train_achieved_GFLOP_per_s"] / out["matmul_peak_GFLOP_per_s"], 3)
    out["communication"] = [communication(p) for p in args.comm_presets]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
