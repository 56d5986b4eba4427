"""The public pre-training corpora (no client's data): phantom image/mask pairs of each task's broad ``public`` site.

:func:`public_corpus` renders one task (fundus by default: the diffusion backbone's corpus);
:func:`multitask_corpus` renders several tasks (fundus disc/cup, skin lesion, colonoscopy polyp) with their masks in
one union class layout, for the task-agnostic foundation SAM and the pretrained TinySAM student.
"""

from __future__ import annotations

import logging
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tqdm.auto import tqdm

from dsfed.data.phantom import FUNDUS_CLASSES, RENDERERS, TASK_CLASSES, load_site_style, render_fundus, sample_rng
from dsfed.data.phantom.fundus import crop_disc_roi
from dsfed.data.phantom.styles import Acquisition
from dsfed.data.sources.base import Sample
from dsfed.data.store import resize_sample

__all__ = ["CORPUS_TASKS", "DEFAULT_TABLE", "TASK_PROMPTS", "TaskCorpus", "multitask_corpus", "public_corpus", "render_one", "union_classes"]

log = logging.getLogger(__name__)

DEFAULT_TABLE = Path(__file__).resolve().parents[2] / "data" / "phantom" / "sites.yaml"


TASK_PROMPTS: dict[str, str] = {
    "fundus": "a retinal fundus photograph",
    "skin": "a dermoscopy photograph of a skin lesion",
    "polyp": "a colonoscopy frame with a polyp",
}
"""Each public task's prompt: the embedded backbone learns one prompt row per task (``backbone.prompt``)."""
CORPUS_TASKS = tuple(TASK_PROMPTS)
ROI_ZOOM, ROI_JITTER = 3.0, 0.08  # the fundus ROI view of the corpora: as the demo's `phantom` sites


def render_one(
    index: int, size: int, seed: int, site: str, style: Acquisition, view: str, roi_zoom: float, roi_jitter: float,
    supersample: int, classes: tuple[str, ...], task: str = "fundus",
) -> tuple[np.ndarray, np.ndarray]:
    """Sample ``index`` of ``site`` of ``task``: image (3, S, S) uint8, masks (K, S, S) uint8 {0, 1}.

    The fundus ROI view follows the ``phantom`` source (render the photograph at ``roi_zoom`` x the window,
    crop a disc-centred window with jitter), at ``supersample`` x the size, then downsized with
    :func:`resize_sample` (antialiased image, area-coverage masks) for cleaner edges. Other tasks are whole
    frames.
    """
    rng = sample_rng(seed, site, index)
    side = size * supersample
    if task == "fundus" and view == "roi":
        image, masks, _ = render_fundus(rng, round(side * roi_zoom), style)  # type: ignore[arg-type]
        image, masks = crop_disc_roi(image, masks, rng, side, roi_jitter)
    else:
        image, masks, _ = RENDERERS[task](rng, side, style)  # type: ignore[operator]
    mask = np.stack([masks[name] for name in classes])
    return resize_sample(Sample(image=image, mask=mask, meta={}), size, size)


def _render_star(args: tuple) -> tuple[np.ndarray, np.ndarray]:
    return render_one(*args)


def _render_all(jobs: list[tuple], desc: str, workers: int, progress: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`render_one` over ``jobs``, in ``workers`` processes (0: here), with a progress bar."""
    bar = dict(total=len(jobs), desc=desc, unit="sample", leave=False, disable=None if progress else True)
    if workers > 0:
        with ProcessPoolExecutor(workers) as pool:
            return list(tqdm(pool.map(_render_star, jobs, chunksize=16), **bar))
    return [_render_star(job) for job in tqdm(jobs, **bar)]


def public_corpus(
    n: int,
    size: int = 64,
    seed: int = 0,
    table: str | Path = DEFAULT_TABLE,
    site: str = "public",
    view: str = "roi",
    roi_zoom: float = ROI_ZOOM,
    roi_jitter: float = ROI_JITTER,
    supersample: int = 2,
    classes: tuple[str, ...] = FUNDUS_CLASSES,
    workers: int = 0,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` phantom fundus samples of ``site`` (default ``public``: broad randomised acquisition styles).

    Sample i depends only on (seed, site, i), so the corpus is the same for any ``workers`` and any ``n``
    prefix. ``workers`` > 0 renders in that many processes.

    Returns:
        images (N, 3, S, S) uint8, masks (N, K, S, S) uint8 {0, 1} in the order of ``classes``.
    """
    if view not in ("roi", "full"):
        raise ValueError(f"view {view!r}: choose 'roi' or 'full'")
    style = load_site_style(Path(table), "fundus", site, field="corpus.site")
    jobs = [(i, size, seed, site, style, view, roi_zoom, roi_jitter, supersample, tuple(classes)) for i in range(n)]
    pairs = _render_all(jobs, f"corpus ({site})", workers, progress)
    images = np.stack([p[0] for p in pairs]) if pairs else np.zeros((0, 3, size, size), np.uint8)
    masks = np.stack([p[1] for p in pairs]) if pairs else np.zeros((0, len(classes), size, size), np.uint8)
    return images, masks


def union_classes(tasks: tuple[str, ...]) -> tuple[str, ...]:
    """Every class of ``tasks``, task by task: ("optic_disc", "optic_cup", "lesion", "polyp") for the three."""
    return tuple(name for task in tasks for name in TASK_CLASSES[task])


class TaskCorpus(NamedTuple):
    """One task's share of a multi-task corpus: images (N, 3, S, S) uint8, masks (N, K_task, S, S) {0, 1},
    and the task's channels in the union class layout."""

    task: str
    images: np.ndarray
    masks: np.ndarray
    channels: tuple[int, ...]


def multitask_corpus(
    n_per_task: int, size: int = 128, seed: int = 0, tasks: tuple[str, ...] = CORPUS_TASKS, table: str | Path = DEFAULT_TABLE,
    supersample: int = 1, workers: int = 0, progress: bool = True,
) -> list[TaskCorpus]:
    """``n_per_task`` samples of each task's ``public`` site (fundus as disc-centred ROIs, as the demo's sites).

    Sample i of a task depends only on (seed, "public", i) and the task's style, so any prefix is stable.
    """
    union = union_classes(tasks)
    out = []
    for task in tasks:
        style = load_site_style(Path(table), task, "public", field="corpus.site")  # type: ignore[arg-type]
        classes = TASK_CLASSES[task]
        jobs = [(i, size, seed, "public", style, "roi", ROI_ZOOM, ROI_JITTER, supersample, classes, task) for i in range(n_per_task)]
        pairs = _render_all(jobs, f"corpus ({task})", workers, progress)
        images = np.stack([p[0] for p in pairs])
        masks = np.stack([p[1] for p in pairs])
        out.append(TaskCorpus(task, images, masks, tuple(union.index(c) for c in classes)))
    return out
