"""SAM-Fed's server initialisation: the LoRA-SAM teacher and the supervised global model(s), both on the public set.

Both select their epoch on the public set's val split (the server's own labelled data; the clients have none),
epoch 0 included: a fine-tune that does not beat its starting point is not kept.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from dsfed.data.dataset import StoreDataset
from dsfed.data.splits import stable_seed
from dsfed.data.store import ClientStore
from dsfed.errors import DsfedError
from dsfed.evaluation.metrics import evaluate, summarise
from dsfed.io import atomic_path, write_json, write_safetensors
from dsfed.models import Segmenter, build_model
from dsfed.models.card import model_card
from dsfed.models.sam import SamSegmenter
from dsfed.samfed.lora import LoraSpec, add_lora, load_adapter, merge_lora, save_adapter
from dsfed.samfed.settings import ArchitectureConfig, SamFedConfig
from dsfed.training.loop import train_epochs
from dsfed.training.losses import LossConfig, build_loss

__all__ = ["build_architecture", "build_teacher_base", "public_dice", "teacher_factory", "train_init", "train_teacher_stage"]

log = logging.getLogger(__name__)


def public_dice(model: Segmenter, public: ClientStore, split: str = "val", batch_size: int = 16) -> float:
    """Mean Dice of ``model`` on the public set's ``split`` (the server's own labels)."""
    return float(summarise(evaluate(model, StoreDataset(public, split), batch_size), public.classes)["dice"])


def build_teacher_base(cfg: SamFedConfig, device: torch.device) -> SamSegmenter:
    """The foundation SAM the teacher starts from (every client holds the same checkpoint)."""
    t = cfg.teacher
    model = build_model(t.model, num_classes=len(cfg.data.classes), output_size=cfg.data.mask_size, input_size=t.input_size,
                        checkpoint=t.checkpoint, classes=tuple(cfg.data.classes)).to(device)
    if not isinstance(model, SamSegmenter):
        raise DsfedError(f"samfed.teacher.model: {t.model} is not a SAM-family model (LoRA goes on a SAM image encoder)")
    return model


def teacher_factory(cfg: SamFedConfig, device: torch.device) -> Callable[[Path], Segmenter]:
    """What a client turns a delivered adapter file into: its base SAM plus the adapter."""
    def build(adapter: Path) -> Segmenter:
        return load_adapter(build_teacher_base(cfg, device), adapter)

    return build


def build_architecture(cfg: SamFedConfig, spec: ArchitectureConfig, seed: int, device: torch.device) -> Segmenter:
    """A client architecture's model (identical initial weights on every call)."""
    torch.manual_seed(seed)
    return build_model(spec.model, num_classes=len(cfg.data.classes), output_size=cfg.data.mask_size, input_size=spec.input_size,
                       checkpoint=spec.checkpoint, classes=tuple(cfg.data.classes)).to(device)


def _fit_selecting(model: Segmenter, public: ClientStore, epochs: int, batch_size: int, optimizer: torch.optim.Optimizer,
                   loss: LossConfig, augment: Any, seed: int, label: str, device: torch.device) -> tuple[Segmenter, list[dict[str, float]]]:
    """Train on the public train split for ``epochs``, keeping the epoch with the best public val Dice (0: as given)."""
    if not len(public.split("val")):
        raise DsfedError(f"{label}: the public set has no val sample to select on (samfed.prepare.split.val is too small)")
    data = StoreDataset(public, "train", augment=augment if augment is not None and augment.enabled else None)
    loss_fn = build_loss(loss).to(device)
    curve = [{"epoch": 0, "val_dice": public_dice(model, public)}]
    best, best_state = curve[0]["val_dice"], copy.deepcopy(model.state_dict())
    for epoch in range(1, epochs + 1):
        if data.augment is not None:
            data.augment.set_random_state(seed=stable_seed(seed, label, epoch, "augment"))
        g = torch.Generator().manual_seed(stable_seed(seed, label, epoch, "shuffle"))
        stats = train_epochs(model, DataLoader(data, batch_size=batch_size, shuffle=True, generator=g), optimizer, loss_fn, 1,
                             device=device, desc=f"{label} epoch {epoch}")
        if not torch.isfinite(torch.tensor(stats["loss"])):
            raise FloatingPointError(f"{label}: non-finite training loss at epoch {epoch}")
        dice = public_dice(model, public)
        curve.append({"epoch": epoch, "loss": stats["loss"], "val_dice": dice})
        log.info("%s: epoch %d/%d loss %.4f public val Dice %.4f", label, epoch, epochs, stats["loss"], dice)
        if dice > best:
            best, best_state = dice, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    return model, curve


def train_teacher_stage(cfg: SamFedConfig, public_path: Path, out: Path, seed: int, device: torch.device) -> dict[str, Any]:
    """``samfed_teacher``: LoRA-SAM on the public set; writes ``adapter.safetensors`` (what clients receive),
    the merged ``model.safetensors`` + ``model.json`` (a plain SAM for evaluation and export) and ``metrics.json``."""
    t = cfg.teacher
    public = ClientStore(public_path)
    spec = LoraSpec(rank=t.lora.rank, alpha=t.lora.alpha, targets=tuple(t.lora.targets), dropout=t.lora.dropout)
    torch.manual_seed(seed)
    model = add_lora(build_teacher_base(cfg, device), spec)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=t.lr)
    curve = _fit_selecting(model, public, t.epochs, t.batch_size, optimizer, t.loss, None, seed, "teacher", device)[1]  # loads the best epoch
    selected = max(range(len(curve)), key=lambda i: (curve[i]["val_dice"], -i))
    out.mkdir(parents=True, exist_ok=True)
    save_adapter(out / "adapter.safetensors", model, spec, metadata={"epoch": str(selected)})
    merged = merge_lora(model)
    with atomic_path(out / "model.safetensors", overwrite=True) as tmp:
        write_safetensors(dict(merged.state_dict()), str(tmp), metadata={"epoch": str(selected)})
    write_json(out / "model.json", model_card(t.model, merged.input_size, "none", merged.num_parameters(), stage="samfed_teacher"))
    metrics = {"selected_epoch": selected, "val_dice": curve[selected]["val_dice"], "foundation_val_dice": curve[0]["val_dice"],
               "trainable_parameters": sum(p.numel() for p in trainable), "parameters": merged.num_parameters(),
               "adapter_bytes": (out / "adapter.safetensors").stat().st_size, "curve": curve, "lora": t.lora.model_dump()}
    write_json(out / "metrics.json", metrics)
    return metrics


def train_init(cfg: SamFedConfig, architecture: str, public_path: Path, out: Path, seed: int, device: torch.device) -> dict[str, Any]:
    """``samfed_init@<architecture>``: the supervised global model on the public set (the lower bound, public only)."""
    spec = cfg.architectures[architecture]
    public = ClientStore(public_path)
    model = build_architecture(cfg, spec, seed, device)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=spec.lr)
    model, curve = _fit_selecting(model, public, cfg.init.epochs, cfg.init.batch_size, optimizer, cfg.loss, cfg.augment, seed,
                                  f"init {architecture}", device)
    selected = max(range(len(curve)), key=lambda i: (curve[i]["val_dice"], -i))
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "model.safetensors", overwrite=True) as tmp:
        write_safetensors(dict(model.state_dict()), str(tmp), metadata={"epoch": str(selected)})
    write_json(out / "model.json", model_card(spec.model, spec.input_size, "none", model.num_parameters(), stage="samfed_init",
                                              architecture=architecture))
    metrics = {"architecture": architecture, "selected_epoch": selected, "val_dice": curve[selected]["val_dice"], "curve": curve,
               "parameters": model.num_parameters()}
    write_json(out / "metrics.json", metrics)
    return metrics
