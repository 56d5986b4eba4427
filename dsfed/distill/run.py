"""Distillation over rounds with a checkpoint per round: a killed run resumes where it stopped.

A checkpoint (:class:`~dsfed.round_checkpoints.RoundCheckpointer`) holds both models (safetensors), both
optimisers and the round generator's state (``torch.save``, read back with ``weights_only=True``), with
the history so far in its ``meta.json``. The last ``keep`` rounds are kept.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from dsfed.distill.rounds import DistillSettings, RoundResult, distill_round, embed_images, frozen_encoder
from dsfed.io import write_safetensors
from dsfed.round_checkpoints import RoundCheckpointer

__all__ = ["latest_round", "run_distillation"]

log = logging.getLogger(__name__)

SCHEMA = 1


def _state(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def latest_round(work: str | Path) -> int:
    """The last completed round recorded in ``work`` (0 when there is none)."""
    found = RoundCheckpointer(work, "", SCHEMA).latest(check_run=False)
    return found.round if found is not None else 0


def _save(checkpointer: RoundCheckpointer, round: int, sam: nn.Module, tiny: nn.Module, optimizers: dict[str, Any],
          generator: torch.Generator, history: list[dict[str, Any]]) -> None:
    def write(tmp: Path) -> None:
        write_safetensors(_state(sam), str(tmp / "sam.safetensors"))
        write_safetensors(_state(tiny), str(tmp / "tiny.safetensors"))
        torch.save({"optimizers": {k: opt.state_dict() for k, opt in optimizers.items() if opt is not None},
                    "generator": generator.get_state()}, tmp / "state.pt")

    checkpointer.save(round, write, {"history": history})


def _load(folder: Path, sam: nn.Module, tiny: nn.Module, optimizers: dict[str, Any], generator: torch.Generator) -> None:
    sam.load_state_dict(load_file(str(folder / "sam.safetensors")))
    tiny.load_state_dict(load_file(str(folder / "tiny.safetensors")))
    state = torch.load(folder / "state.pt", weights_only=True)
    for key, opt in optimizers.items():
        if opt is not None:
            opt.load_state_dict(state["optimizers"][key])
    generator.set_state(state["generator"])


def run_distillation(
    sam: nn.Module,
    tiny: nn.Module,
    sam_optimizer: torch.optim.Optimizer | None,
    tiny_optimizer: torch.optim.Optimizer,
    images: Tensor,
    masks: Tensor,
    settings: DistillSettings,
    rounds: int,
    seed: int = 0,
    work: str | Path | None = None,
    run: str = "",
    keep: int = 2,
    on_round: Callable[[int, RoundResult], None] | None = None,
    device: torch.device | str = "cpu",
    cache_embeddings: bool = True,
) -> list[dict[str, Any]]:
    """Run rounds 1..``rounds`` of :func:`distill_round`, resuming after the last checkpoint in ``work``.

    Args:
        images, masks: the synthetic pairs (N, 3, S, S) / (N, C, Sm, Sm).
        work: checkpoint folder (None: no checkpoints). A resumed run continues the same generator, so it
            ends with the weights an uninterrupted run has (same torch thread count).
        run: the run's identity; a checkpoint in ``work`` of another identity is refused.
        on_round: called after each round (logging, model selection).
        cache_embeddings: when SAM's image encoder is frozen, embed every image once (:func:`embed_images`) and
            run only SAM's decoder in the rounds, scoring and training alike.

    Returns:
        one record per round: ``round``, ``pool_size``, the mean loss parts, score mean/std.
    """
    generator = torch.Generator().manual_seed(seed)
    optimizers = {"sam": sam_optimizer, "tiny": tiny_optimizer}
    history: list[dict[str, Any]] = []
    start = 1
    checkpointer = RoundCheckpointer(work, run, SCHEMA, keep) if work is not None else None
    if checkpointer is not None:
        checkpointer.remove_stale_temps()
        found = checkpointer.latest()
        if found is not None:
            _load(found.path, sam, tiny, optimizers, generator)
            history = list(found.meta["history"])
            start = found.round + 1
            log.info("distillation: resuming after round %d of %d", found.round, rounds)
    embeddings = None
    if cache_embeddings and frozen_encoder(sam) and start <= rounds:
        started = time.perf_counter()
        embeddings = embed_images(sam, images, settings.batch_size * 4, device)
        log.info("distillation: SAM's encoder is frozen: %d image embeddings cached (%.0f MB, %.1f s)", len(embeddings),
                 embeddings.numel() * 4 / 1e6, time.perf_counter() - started)
    for round in range(start, rounds + 1):
        result = distill_round(sam, tiny, sam_optimizer, tiny_optimizer, images, masks, settings, generator, device, embeddings)
        history.append({"round": round, "pool_size": len(result.pool), **result.losses,
                        "score_mean": float(result.scores.mean()), "score_std": float(result.scores.std())})
        if on_round is not None:  # before the checkpoint: a run killed in between redoes the round
            on_round(round, result)
        if checkpointer is not None:
            _save(checkpointer, round, sam, tiny, optimizers, generator, history)
    return history
