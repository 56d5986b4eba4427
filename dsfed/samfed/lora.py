"""LoRA-SAM: the SAM-Fed server's teacher (SAMed style), with low-rank adapters from the ``peft`` library.

peft's LoRA layers are injected into ``model.sam.image_encoder`` only (by default its attention ``qkv``
Linear layers). Every original image-encoder and prompt-encoder weight is frozen; the LoRA A/B matrices,
the mask decoder and the class head train. A client needs only those (:func:`adapter_state`) on top of the
same base SAM. Unlike SAMed's hand-written ``_LoRA_qkv``, which adapts only the q and v thirds of the fused
``qkv`` projection, peft adapts the whole (3D, D) projection: ``rank * (D + 3D)`` parameters per layer.

Key layout while adapted (peft's): ``...attn.qkv.base_layer.weight``, ``...attn.qkv.lora_A.default.weight``
(r, D_in), ``...attn.qkv.lora_B.default.weight`` (D_out, r). :func:`merge_lora` gives back the official
layout (``...attn.qkv.weight``).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors import safe_open
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from dsfed.errors import DsfedError
from dsfed.io import write_safetensors
from dsfed.models.checkpoint import CheckpointError
from dsfed.models.sam import SamSegmenter
from dsfed.training.loop import train_epochs

__all__ = ["FROZEN_BY_LORA", "LoraSpec", "adapter_state", "add_lora", "load_adapter", "lora_layers", "merge_lora",
           "save_adapter", "train_teacher"]

ADAPTER = "default"  # peft's adapter name; part of every LoRA key
FROZEN_BY_LORA = r"^sam\.(image_encoder\.(?!.*\.lora_)|prompt_encoder\.)"
"""Segmenter keys LoRA-SAM never trains (the base SAM but the mask decoder); every other key is the adapter."""
SPEC_KEYS = ("rank", "alpha", "targets", "dropout")


@dataclass(frozen=True)
class LoraSpec:
    """Where and how big the LoRA adapters are.

    Attributes:
        rank: r, the inner dimension of ``B @ A``. alpha: peft's ``lora_alpha``; the update is scaled by alpha / r.
        targets: module-name suffixes inside ``sam.image_encoder`` ("qkv", "proj", "lin1", ...); only
            ``nn.Linear`` modules are adapted ("proj" takes the attention projections, not the patch
            embedding's Conv2d of the same name).
        dropout: dropout on the LoRA branch's input while training.
    """

    rank: int = 4
    alpha: float = 4.0
    targets: tuple[str, ...] = ("qkv",)
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.rank < 1 or not self.targets or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoraSpec needs rank >= 1, some targets and 0 <= dropout < 1, got {self}")

    def metadata(self) -> dict[str, str]:
        """The spec as safetensors metadata strings (``targets`` as a JSON list)."""
        return {"rank": str(self.rank), "alpha": repr(float(self.alpha)), "targets": json.dumps(list(self.targets)),
                "dropout": repr(float(self.dropout))}

    @classmethod
    def from_metadata(cls, metadata: dict[str, str], source: str) -> LoraSpec:
        """Read back :meth:`metadata`; ``source`` names the file in the one-line error."""
        try:
            return cls(int(metadata["rank"]), float(metadata["alpha"]),
                       tuple(str(t) for t in json.loads(metadata["targets"])), float(metadata["dropout"]))
        except (KeyError, ValueError, TypeError) as exc:
            raise DsfedError(f"{source}: not a LoRA adapter file (its metadata lacks a valid {'/'.join(SPEC_KEYS)}: "
                             f"{type(exc).__name__} {exc})") from exc


def lora_layers(model: nn.Module) -> dict[str, BaseTunerLayer]:
    """The peft LoRA layers in ``model`` by module name (empty for a plain model)."""
    return {name: module for name, module in model.named_modules() if isinstance(module, BaseTunerLayer)}


def _targets(encoder: nn.Module, spec: LoraSpec) -> list[str]:
    """Names (inside ``encoder``) of the Linear layers the spec's targets match, every target matching one."""
    linears = [name for name, module in encoder.named_modules() if isinstance(module, nn.Linear)]
    names: list[str] = []
    for target in spec.targets:
        found = [n for n in linears if n == target or n.endswith("." + target)]
        if not found:
            suffixes = sorted({n.rsplit(".", 1)[-1] for n in linears})
            raise DsfedError(f"LoRA target {target!r} matches no Linear layer of the SAM image encoder "
                             f"({type(encoder).__name__}); its Linear layers end in: {', '.join(suffixes)}")
        names += [n for n in found if n not in names]
    return names


def add_lora(model: SamSegmenter, spec: LoraSpec) -> SamSegmenter:
    """Inject peft LoRA adapters into ``model.sam.image_encoder`` (in place) and set what trains.

    Afterwards only the LoRA A (r, D_in) / B (D_out, r) weights, the mask decoder and the class head have
    ``requires_grad``; A is peft's Kaiming-uniform init (torch's global RNG: deterministic after
    ``torch.manual_seed``), B is zero, so the adapted model starts with the base model's outputs.
    ``model.frozen_keys`` becomes :data:`FROZEN_BY_LORA`, so the federated core never ships the base weights.

    Raises:
        DsfedError: a target matches no Linear layer, or the model already has adapters (LoRA or MSA).
    """
    encoder = model.sam.image_encoder
    if lora_layers(model) or model.frozen_keys:
        raise DsfedError(f"{type(model).__name__} already has adapters or frozen keys; add LoRA to a plain SAM")
    names = _targets(encoder, spec)
    # peft annotates lora_alpha as int; it only ever computes alpha / r, so a float alpha is exact
    config = LoraConfig(r=spec.rank, lora_alpha=spec.alpha, lora_dropout=spec.dropout,  # type: ignore[arg-type]
                        target_modules=names, bias="none", init_lora_weights=True)
    inject_adapter_in_model(config, encoder, adapter_name=ADAPTER)
    frozen = re.compile(FROZEN_BY_LORA)
    for key, parameter in model.named_parameters():
        parameter.requires_grad_(not frozen.search(key))
    model.frozen_keys = (FROZEN_BY_LORA,)
    return model


def adapter_state(model: SamSegmenter) -> dict[str, Tensor]:
    """What a SAM-Fed client needs besides the base SAM: LoRA A/B, mask decoder and head, as CPU copies.

    Keys are the adapted model's state-dict keys (``sam.image_encoder....lora_A.default.weight``,
    ``sam.mask_decoder....``, ``head.weight`` (C, T, 1, 1), ``head.bias`` (C,)).
    """
    if not lora_layers(model):
        raise DsfedError(f"{type(model).__name__} has no LoRA adapters (call add_lora first)")
    frozen = re.compile(FROZEN_BY_LORA)
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items() if not frozen.search(k)}


def save_adapter(path: str | Path, model: SamSegmenter, spec: LoraSpec, metadata: dict[str, str] | None = None) -> Path:
    """Write :func:`adapter_state` as safetensors; the metadata records the spec (and ``metadata``)."""
    extra = dict(metadata or {})
    clash = sorted(set(extra) & set(SPEC_KEYS))
    if clash:
        raise ValueError(f"metadata keys {clash} are reserved for the LoRA spec")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_safetensors(dict(adapter_state(model)), str(path), metadata={**extra, **spec.metadata()})
    return path


def _read_adapter(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file whatever its suffix; CheckpointError (one line) if unreadable."""
    if not path.is_file():
        raise CheckpointError(f"{path}: adapter file does not exist")
    try:
        with safe_open(str(path), framework="pt") as fh:
            return {k: fh.get_tensor(k) for k in fh.keys()}, dict(fh.metadata() or {})
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: cannot read adapter file ({reason})") from exc


def load_adapter(model: SamSegmenter, path: str | Path) -> SamSegmenter:
    """Apply the file's spec to a plain ``model`` (:func:`add_lora`, in place) and load the file's weights.

    Strict: every adapter key of the model must be in the file with its shape, and nothing else. The file is
    checked after the adapters are injected: on error, discard the model.

    Raises:
        DsfedError: missing/unreadable file, no spec in its metadata, or keys that do not fit (one line).
    """
    path = Path(path)
    state, metadata = _read_adapter(path)
    spec = LoraSpec.from_metadata(metadata, str(path))
    add_lora(model, spec)
    own = {k: v for k, v in model.state_dict().items() if not re.search(FROZEN_BY_LORA, k)}
    missing = sorted(own.keys() - state.keys())
    unexpected = sorted(state.keys() - own.keys())
    mismatched = sorted(f"{k} (file {tuple(state[k].shape)}, model {tuple(own[k].shape)})"
                        for k in own.keys() & state.keys() if state[k].shape != own[k].shape)
    problems = [f"{len(keys)} {label} [{', '.join(keys)}]"
                for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)) if keys]
    if problems:
        raise CheckpointError(f"{path}: does not fit {spec} on {type(model.sam.image_encoder).__name__}: {'; '.join(problems)}")
    model.load_state_dict(state, strict=False)  # the base SAM's keys are the model's own; the adapter's all checked above
    return model


def merge_lora(model: SamSegmenter) -> SamSegmenter:
    """A plain copy of ``model`` with every LoRA update merged: ``W' = W + (alpha / r) * B @ A``.

    The copy has no peft modules and the official key layout (loads strictly into ``build_model`` of the
    same preset and classes); all its parameters train again and ``frozen_keys`` is the class default.
    ``model`` is left as it is.
    """
    if not lora_layers(model):
        raise DsfedError(f"{type(model).__name__} has no LoRA adapters to merge")
    merged = copy.deepcopy(model)
    # inject_adapter_in_model returns the model and drops peft's LoraModel, whose merge_and_unload would
    # merge and unwrap in one call; each injected layer keeps peft's own merge (W += get_delta_weight(),
    # NaN-checked with safe_merge), and unwrapping is putting its base_layer back where it sits.
    for name, layer in lora_layers(merged).items():
        layer.merge(safe_merge=True)
        parent, _, child = name.rpartition(".")
        setattr(merged.get_submodule(parent), child, layer.get_base_layer())
    merged.sam.image_encoder.__dict__.pop("peft_config", None)  # peft's record of the config on the injected module
    merged.__dict__.pop("frozen_keys", None)
    for parameter in merged.parameters():
        parameter.requires_grad_(True)
    return merged


@contextmanager
def _frozen_batchnorm_eval(model: SamSegmenter) -> Iterator[None]:
    """Keep BatchNorm layers of the frozen encoders in eval mode while ``model.train()`` is on.

    TinyViT's Conv2d_BN would otherwise update its running statistics (buffers of the frozen base, which
    clients take from the base checkpoint, not from the adapter). ``train_epochs`` calls ``model.train()``
    itself, so a pre-forward hook switches them back on every call.
    """
    norms = [m for m in (*model.sam.image_encoder.modules(), *model.sam.prompt_encoder.modules())
             if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def to_eval(module: nn.Module, _args: object) -> None:  # None: the hook leaves the inputs as they are
        module.train(False)

    hooks = [m.register_forward_pre_hook(to_eval) for m in norms]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()


def train_teacher(
    model: SamSegmenter,
    dataset: Dataset[dict[str, Any]],
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    loss_fn: nn.Module,
    device: torch.device | str,
    seed: int,
    progress: bool = True,
) -> dict[str, float]:
    """Train the LoRA-SAM teacher: Adam over the trainable parameters only (LoRA, mask decoder, head).

    Args:
        model: adapted by :func:`add_lora`; moved to ``device``.
        dataset: items ``{"image": (3, S, S) in [0, 1], "mask": (C, Sm, Sm) {0, 1}}`` with Sm = output_size.
        loss_fn: logits (B, C, Sm, Sm), masks (B, C, Sm, Sm) -> scalar.
        seed: seeds the shuffling (and box jitter for box-prompted models); LoRA dropout draws from
            torch's global RNG.
        progress: a per-epoch progress bar (``train_epochs``' own per-batch bar shows on a terminal only).

    Returns:
        ``{"loss": mean batch loss over all epochs, "final_loss": the last epoch's, "samples", "steps"}``.
    """
    if not lora_layers(model):
        raise DsfedError(f"{type(model).__name__} has no LoRA adapters (call add_lora first)")
    device = torch.device(device)
    model.to(device)
    loss_fn.to(device)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))
    jitter = torch.Generator().manual_seed(seed + 1)
    total, samples, steps, last = 0.0, 0.0, 0.0, float("nan")
    with _frozen_batchnorm_eval(model):
        bar = tqdm(range(epochs), desc="LoRA-SAM teacher", unit="epoch", disable=not progress)
        for epoch in bar:
            stats = train_epochs(model, loader, optimizer, loss_fn, epochs=1, device=device,
                                 desc=f"teacher epoch {epoch + 1}/{epochs}", generator=jitter)
            last = stats["loss"]
            total += stats["loss"] * stats["samples"]
            samples += stats["samples"]
            steps += stats["steps"]
            bar.set_postfix(loss=f"{last:.4f}")
    return {"loss": total / max(samples, 1.0), "final_loss": last, "samples": samples, "steps": steps}
