"""Benchmark: the real models near the GPU's limit, and the paper's Fundus configuration projected from them.

One call on a machine with a CUDA GPU (about 10 minutes on an H100; random weights, official architectures)::

    python benchmarks/gpu.py          # also writes docs/benchmarks/gpu-<gpu name>.json (make bench-gpu)

Measures, at the paper's 1024 px with bf16 autocast:

- SAM ViT-B fine-tuning and TinySAM training: for each variant (eager; SAM's attention through SDPA,
  :mod:`dsfed.models.sdpa`; channels-last for TinySAM's convolutions; ``torch.compile``, tried at the largest
  batch the eager variants fit), the best batch up to ``--max-batch`` (doubling from 1), samples/s there, FLOPs per sample (torch's counter) and the
  fraction of the GPU's measured bf16 matmul peak (issue 18's target for SAM ViT-B: >= 0.35);
- SD 1.5 ControlNet training steps/s at 512 px and DDIM sampling images/s (``benchmarks/generation.py``);
- the projected wall time of the paper's Fundus configuration (100 rounds, the FedDG domains' training images
  per client, synchronous rounds: the slowest client sets the pace) set beside the paper's Table 3: FedSAM
  1,411 min; DSFedMed 198 min of federated training + 455.5 min of generation and distillation.

``--smoke`` runs every step at toy sizes on any device (what CI-free checks on a CPU can do).
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from dsfed.models import build_model
from dsfed.models.sdpa import use_sdpa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from models import flops, matmul_peak, train_step  # noqa: E402  (benchmarks/models.py)

PAPER_MIN = {"fedsam": 1411.0, "dsfedmed_federated": 198.0, "dsfedmed_generation_distill": 455.5}
# FedDG fundus training images of the three source domains (Domain1-3: 101, 159, 400 images) after the
# paper-fundus preset's split (val 0.15, test 0.2): what each client trains on per round
CLIENT_TRAIN_IMAGES = (66, 103, 260)
SYNTHETIC_PER_CLIENT = 500   # paper-fundus: synthesize.n
CONTROLNET_STEPS = 5000      # paper-fundus: controlnet.steps at batch 4


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _variant(name: str, preset: str, size: int, device: torch.device) -> torch.nn.Module:
    model = build_model(preset, num_classes=2, output_size=256, input_size=size).to(device).train()
    if "sdpa" in name:
        use_sdpa(model)
    if "channels_last" in name:
        model = model.to(memory_format=torch.channels_last)
    if "compile" in name:
        model = torch.compile(model)  # type: ignore[assignment]
    return model


def _samples_per_s(name: str, preset: str, size: int, batch: int, device: torch.device, amp: bool, steps: int) -> float:
    """Samples/s of ``steps`` timed training steps after three warm-up steps (compilation happens there)."""
    model = _variant(name, preset, size, device)
    step = train_step(model, torch.rand(batch, 3, size, size, device=device), (torch.rand(batch, 2, 256, 256, device=device) > 0.8).float(), amp)
    for _ in range(3):
        step()
    _sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync()
    return batch * steps / (time.perf_counter() - start)


def train_throughput(preset: str, variants: list[str], size: int, device: torch.device, amp: bool, max_batch: int, steps: int,
                     peak: float) -> dict[str, Any]:
    """Per variant: the largest batch that fits (doubling from 1), its samples/s and the fraction of ``peak``."""
    counted = build_model(preset, num_classes=2, output_size=256, input_size=size).to(device).train()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        per_sample = flops(counted, torch.rand(1, 3, size, size, device=device), train=True)
    del counted
    rows: list[dict[str, Any]] = []
    for name in variants:
        best: dict[str, Any] = {"variant": name, "error": "nothing fit"}
        batch, limit = 1, max_batch
        fitted = [r["batch"] for r in rows if "batch" in r]
        if "compile" in name and fitted:   # compiling is minutes per shape: only at the largest batch the eager variants fit
            batch = limit = max(fitted)
        while batch <= limit:
            try:
                rate = _samples_per_s(name, preset, size, batch, device, amp, steps)
            except torch.OutOfMemoryError:
                break
            except Exception as exc:  # a variant that does not run here (e.g. compile without a compiler) is reported
                best = {"variant": name, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
                break
            finally:
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            achieved = rate * per_sample
            if "samples_per_s" not in best or rate > best["samples_per_s"]:
                best = {"variant": name, "batch": batch, "samples_per_s": round(rate, 2), "achieved_TFLOP_per_s": round(achieved / 1e12, 2),
                        "fraction_of_bf16_peak": round(achieved / peak, 3)}
            batch *= 2
        rows.append(best)
        print(f"{preset} {name}: {best}", file=sys.stderr, flush=True)
    ok = [r for r in rows if "samples_per_s" in r]
    return {"preset": preset, "input_size": size, "train_GFLOP_per_sample": round(per_sample / 1e9, 1), "variants": rows,
            "best": max(ok, key=lambda r: r["samples_per_s"]) if ok else None}


def generation(device: torch.device, smoke: bool) -> dict[str, Any]:
    """``benchmarks/generation.py`` for SD 1.5 (official configs, random weights), bf16."""
    args = ["--config", "embedded", "--train-steps", "2", "--sample-n", "2", "--sample-steps", "2"] if smoke else \
        ["--config", "sd15", "--amp", "--batch", "8", "--train-steps", "20", "--sample-n", "32", "--sample-batch", "16", "--sample-steps", "20"]
    done = subprocess.run([sys.executable, str(Path(__file__).with_name("generation.py")), *args, "--device", str(device)],
                          check=True, capture_output=True, text=True)
    return dict(json.loads(done.stdout))


def projection(sam: float, tiny: float, gen: dict[str, Any]) -> dict[str, Any]:
    """Minutes of the paper's Fundus configuration from the measured rates (samples/s of SAM and TinySAM training,
    ControlNet steps/s at batch ``gen``'s, sampling images/s); synchronous rounds wait for the largest client."""
    slowest = max(CLIENT_TRAIN_IMAGES)
    fedsam = 100 * slowest / sam / 60
    fedtiny = 100 * slowest / tiny / 60
    batch = gen["controlnet_training"]["batch"]
    controlnet = CONTROLNET_STEPS * 4 / batch / gen["controlnet_training"]["steps_per_s"] / 60   # 5,000 steps at batch 4, per client in parallel
    synthesis = len(CLIENT_TRAIN_IMAGES) * SYNTHETIC_PER_CLIENT / gen["sampling"]["images_per_s"] / 60
    pairs = int(len(CLIENT_TRAIN_IMAGES) * SYNTHETIC_PER_CLIENT * 0.85)
    server_sam = 10 * pairs / sam / 60
    # distillation, 100 rounds: score every pair (~1/3 of a training step's cost per model) and train both on half
    distill = 100 * (pairs / 3 * (1 / sam + 1 / tiny) + pairs / 2 * (1 / sam + 1 / tiny)) / 60
    return {
        "fedsam_min": round(fedsam, 1), "paper_fedsam_min": PAPER_MIN["fedsam"],
        "dsfedmed_federated_min": round(fedtiny, 1), "paper_dsfedmed_federated_min": PAPER_MIN["dsfedmed_federated"],
        "dsfedmed_generation_distill_min": round(controlnet + synthesis + server_sam + distill, 1),
        "paper_dsfedmed_generation_distill_min": PAPER_MIN["dsfedmed_generation_distill"],
        "parts_min": {"controlnet": round(controlnet, 1), "synthesis": round(synthesis, 1), "server_sam": round(server_sam, 1),
                      "distill": round(distill, 1)},
        "assumptions": f"train images per client {CLIENT_TRAIN_IMAGES} (FedDG Domain1-3 after a 0.65 train split), 1 local epoch, "
                       f"synchronous rounds, {SYNTHETIC_PER_CLIENT} synthetic pairs per client, ControlNet 5,000 steps at batch 4, "
                       "server SAM 10 epochs, distillation 100 rounds (scoring at a third of a training step), no communication time",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None,
                        help="also write the JSON here (default on a GPU: docs/benchmarks/gpu-<gpu name>.json)")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per (variant, batch)")
    parser.add_argument("--smoke", action="store_true", help="toy sizes on any device: checks the script, measures nothing")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda" and not args.smoke:
        parser.error("no CUDA device: this benchmark is for a GPU (--smoke checks the script on a CPU)")
    size, max_batch, steps = (64, 2, 1) if args.smoke else (1024, args.max_batch, args.steps)
    sam_preset, tiny_preset = ("sam_demo", "tinysam_demo") if args.smoke else ("sam_vit_b", "tinysam")
    peak = matmul_peak(device, torch.bfloat16 if device.type == "cuda" else torch.float32, 512 if args.smoke else 8192)
    out: dict[str, Any] = {"benchmark": "gpu", "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.machine(),
                           "torch": torch.__version__, "bf16_matmul_peak_TFLOP_per_s": round(peak / 1e12, 1), "smoke": args.smoke}
    amp = device.type == "cuda"
    out["sam_vit_b"] = train_throughput(sam_preset, ["eager", "sdpa", "sdpa+compile"], size, device, amp, max_batch, steps, peak)
    out["tinysam"] = train_throughput(tiny_preset, ["eager", "channels_last", "channels_last+compile"], size, device, amp, max_batch, steps,
                                      peak)
    out["generation"] = generation(device, args.smoke)
    if out["sam_vit_b"]["best"] and out["tinysam"]["best"]:
        out["projection"] = projection(out["sam_vit_b"]["best"]["samples_per_s"], out["tinysam"]["best"]["samples_per_s"], out["generation"])
        out["meets_sam_target"] = out["sam_vit_b"]["best"]["fraction_of_bf16_peak"] >= 0.35
    text = json.dumps(out, indent=2)
    print(text)
    target = args.out
    if target is None and not args.smoke:
        slug = re.sub(r"[^a-z0-9]+", "-", out["device"].lower().replace("nvidia", "")).strip("-")
        target = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / f"gpu-{slug}.json"
    if target is not None:
        target.write_text(text + "\n")
        print(f"written to {target}", file=sys.stderr)


if __name__ == "__main__":
    main()
