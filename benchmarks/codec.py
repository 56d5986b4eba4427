"""Benchmark: what the payload codec saves (bytes in the ledger) and costs (Dice), measured and projected.

Prints one JSON object with two parts:

- ``demo``: the demo's FedTinySAM (or any ``--methods``) trained twice in a project that has run ``dvc repro``
  up to its client stores (``--project``, e.g. a fresh clone after ``dsfed repro federated@fedtinysam``):
  once with the params' codec, once with each ``--codec`` given; each run's training traffic from its
  ledger, its test Dice on the source clients and on the held-out one. Runs go to ``<project>/bench-codec/``.
- ``real``: the real TinySAM (``tinysam``: TinyViT-5M + SAM's decoder, the paper's student): one download
  and one upload encoded with each codec, the upload being the change of ``--steps`` Adam steps at the
  paper's lr 1e-4 (on random images at ``--input-size``; the weights are a random init unless ``--checkpoint``
  gives TinySAM's release), projected to the paper's 100 rounds plus DSFedMed's one-off transfers (the SD 1.5
  ControlNet upload in fp16, the student download), against the paper's 8,920 MB per client; and the same
  projection with the demo's measured traffic fraction instead (``projected_real_total_per_client_MB``).

Usage: ``python benchmarks/codec.py --project ../clone [--methods fedtinysam] [--codec down=fp16,up=bf16,delta=1,compress=zstd]``
(``--real-only`` skips the demo runs).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from dsfed.federated.codec import PLAIN, Codec, encode
from dsfed.federated.engines import InProcessEngine
from dsfed.federated.federation import Federation
from dsfed.federated.ledger import ledger_totals
from dsfed.federated.settings import CodecConfig

MB = 1e6
RECOMMENDED = "down=fp16,up=bf16,delta=1,compress=zstd"
PAPER_DSFEDMED_MB = 8920           # per client, 100 rounds (paper Table 3)


def parse_codec(text: str) -> dict[str, Any]:
    """``down=fp16,up=bf16,delta=1,compress=zstd`` -> the ``federated.codec`` mapping."""
    out: dict[str, Any] = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        out[key] = value in ("1", "true", "yes") if key == "delta" else int(value) if key == "level" else value
    return out


def _dice(metrics: dict[str, Any], holdout: str | None) -> dict[str, float]:
    test = metrics["test"]
    sources = [m["dice"] for name, m in test.items() if name != holdout]
    return {"source": round(sum(sources) / len(sources), 4), "held_out": round(test[holdout]["dice"], 4) if holdout in test else float("nan")}


def demo_run(project: Path, method: str, codec: dict[str, Any] | None, label: str) -> dict[str, Any]:
    """``method`` trained in ``project`` with ``federated.codec`` replaced by ``codec`` (None: the params' own)."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    if codec is not None:
        params["federated"]["codec"] = codec
    root = project / "bench-codec" / label
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    (root / "clients").symlink_to((project / "artifacts" / "clients").resolve())
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dsfed_pipeline.flows.federated", method, "--params", str(root / "params.yaml"),
                    "--artifacts", str(root)], cwd=project, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(project)})
    seconds = time.perf_counter() - start
    folder = root / "federated" / method
    metrics = json.loads((folder / "metrics.json").read_text())
    totals = ledger_totals(folder / "ledger.csv")
    rounds = int(metrics["communication"]["rounds"])
    clients = max(len(totals["clients"]), 1)
    return {"method": method, "codec": params["federated"]["codec"], "rounds": rounds, "seconds": round(seconds, 1),
            "train_MB_per_client_per_round": round(totals["total"] / clients / rounds / MB, 3),
            "down_MB_per_client_per_round": round(totals["down"] / clients / rounds / MB, 3),
            "up_MB_per_client_per_round": round(totals["up"] / clients / rounds / MB, 3),
            "evaluation_MB": round(totals["evaluation"]["total"] / MB, 2), "dice": _dice(metrics, params["data"].get("holdout"))}


def _controlnet_parameters() -> int:
    """Parameters of a ControlNet on SD 1.5 (diffusers' defaults are SD 1.5's UNet config), built on the meta device."""
    from diffusers import ControlNetModel

    with torch.device("meta"):
        return sum(p.numel() for p in ControlNetModel().parameters())


def real_tinysam(codecs: dict[str, tuple[Codec, Codec]], steps: int, input_size: int, checkpoint: str | None) -> dict[str, Any]:
    """One download and one upload of the real TinySAM per (download, upload) codec; the upload is ``steps`` Adam steps' change."""
    from dsfed.models.registry import build_model

    torch.manual_seed(0)
    options: dict[str, Any] = {"input_size": input_size}
    if checkpoint:
        options.update(checkpoint=checkpoint, strict=False)
    model = build_model("tinysam", num_classes=2, output_size=256, **options)
    sent = {k: v.detach().clone() for k, v in model.state_dict().items()}
    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 256), torch.linspace(-1, 1, 256), indexing="ij")
    masks = torch.stack([(xx**2 + yy**2 < 0.3).float(), (xx**2 + yy**2 < 0.1).float()]).expand(2, -1, -1, -1)
    start = time.perf_counter()
    for _ in range(steps):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(torch.rand(2, 3, input_size, input_size)), masks)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    train_s = time.perf_counter() - start
    trained = {k: v.detach().clone() for k, v in model.state_dict().items()}
    controlnet_mb = 2 * _controlnet_parameters() / MB   # its upload: fp16 safetensors, as the controlnet stage writes it
    plain_transfer = len(encode(sent, PLAIN))
    out: dict[str, Any] = {"model": "tinysam", "parameters": sum(v.numel() for v in sent.values()),
                           "weights": f"checkpoint {checkpoint}" if checkpoint else "random init (no TinySAM release on this machine)",
                           "update": f"{steps} Adam steps at lr 1e-4, batch 2, {input_size} px random images ({train_s:.1f} s)",
                           "controlnet_upload_MB": round(controlnet_mb), "codecs": {}}
    for name, (down, up) in codecs.items():
        started = time.perf_counter()
        down_bytes = len(encode(sent, down, reply=None if up.plain else up))
        up_bytes = len(encode(trained, up, reference=sent if up.delta else None))
        encode_ms = (time.perf_counter() - started) * 1e3
        rounds_mb = 100 * (down_bytes + up_bytes) / MB
        student_mb = down_bytes / MB          # the deployed student, sent once (in the download's codec)
        total = rounds_mb + controlnet_mb + student_mb
        out["codecs"][name] = {
            "down": down.to_json(), "up": up.to_json(), "down_MB": round(down_bytes / MB, 2), "up_MB": round(up_bytes / MB, 2),
            "fraction_of_fp32_transfer": round((down_bytes + up_bytes) / (2 * plain_transfer), 3), "encode_ms": round(encode_ms, 1),
            "rounds_100_MB": round(rounds_mb), "student_download_MB": round(student_mb, 1), "total_per_client_MB": round(total),
            "paper_MB": PAPER_DSFEDMED_MB, "target_MB": 4500, "meets_target": total <= 4500,
        }
    return out


def codec_pair(spec: dict[str, Any]) -> tuple[Codec, Codec]:
    """The (download, upload) codecs a :class:`~dsfed.federated.federation.Federation` uses for a ``federated.codec`` mapping."""
    federation = Federation(InProcessEngine([]), "", codec=CodecConfig(**spec))
    return federation.down, federation.up or PLAIN


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, help="a project whose client stores are built (artifacts/clients)")
    parser.add_argument("--methods", nargs="+", default=["fedtinysam"])
    parser.add_argument("--codec", action="append", default=None, help=f"a codec to compare with the params' own (default {RECOMMENDED})")
    parser.add_argument("--real-only", action="store_true", help="skip the demo runs")
    parser.add_argument("--steps", type=int, default=25, help="Adam steps of the real TinySAM's upload (a local epoch of ~100 images)")
    parser.add_argument("--input-size", type=int, default=256, help="image side of those steps (the weights do not depend on it)")
    parser.add_argument("--checkpoint", default=None, help="TinySAM's released tinysam.pth, if you have it")
    args = parser.parse_args()
    specs = [parse_codec(text) for text in (args.codec or [RECOMMENDED])]
    out: dict[str, Any] = {"benchmark": "codec", "machine": platform.machine(), "torch": torch.__version__, "threads": torch.get_num_threads()}
    if not args.real_only:
        if args.project is None:
            parser.error("--project is needed for the demo runs (or pass --real-only)")
        out["demo"] = []
        for method in args.methods:
            base = demo_run(args.project, method, None, f"{method}-params")
            runs = [base, *(demo_run(args.project, method, spec, f"{method}-{i}") for i, spec in enumerate(specs))]
            for run in runs[1:]:
                run["traffic_fraction"] = round(run["train_MB_per_client_per_round"] / base["train_MB_per_client_per_round"], 3)
                run["dice_change"] = {k: round(run["dice"][k] - base["dice"][k], 4) for k in base["dice"]}
            out["demo"].extend(runs)
    codecs = {"plain": (PLAIN, PLAIN), **{json.dumps(spec, sort_keys=True): codec_pair(spec) for spec in specs}}
    out["real"] = real_tinysam(codecs, args.steps, args.input_size, args.checkpoint)
    plain_mb = out["real"]["codecs"]["plain"]["down_MB"]
    for run in out.get("demo", []):   # the demo's measured traffic fraction applied to the real TinySAM's rounds
        if run["method"] == "fedtinysam" and "traffic_fraction" in run:
            rounds_mb = 100 * 2 * plain_mb * run["traffic_fraction"]
            run["projected_real_total_per_client_MB"] = round(rounds_mb + out["real"]["controlnet_upload_MB"] + plain_mb)
    print(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
