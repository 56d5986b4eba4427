"""The public pre-training corpus: phantom fundus image/mask pairs of the broad ``public`` site (no client's data)."""

from __future__ import annotations

import logging
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from dsfed.data.phantom import FUNDUS_CLASSES, load_site_style, render_fundus, sample_rng
from dsfed.data.phantom.fundus import crop_disc_roi
from dsfed.data.phantom.styles import FundusStyle
from dsfed.data.sources.base import Sample
from dsfed.data.store import resize_sample

__all__ = ["DEFAULT_TABLE", "public_corpus", "render_one"]

log = logging.getLogger(__name__)

DEFAULT_TABLE = Path(__file__).resolve().parents[2] / "data" / "phantom" / "sites.yaml"


def render_one(
    index: int, size: int, seed: int, site: str, style: FundusStyle, view: str, roi_zoom: float, roi_jitter: float,
    supersample: int, classes: tuple[str, ...],
) -> tuple[np.ndarray, np.ndarray]:
    """Sample ``index`` of ``site``: image (3, S, S) uint8, masks (K, S, S) uint8 {0, 1}.

    The ROI view follows the ``phantom`` source (render the photograph at ``roi_zoom`` x the window, crop
    a disc-centred window with jitter), at ``supersample`` x the size, then downsized with
    :func:`resize_sample` (antialiased image, area-coverage masks) for cleaner edges.
    """
    rng = sample_rng(seed, site, index)
    side = size * supersample
    if view == "roi":
        image, masks, _ = render_fundus(rng, round(side * roi_zoom), style)
        image, masks = crop_disc_roi(image, masks, rng, side, roi_jitter)
    else:
        image, masks, _ = render_fundus(rng, side, style)
    mask = np.stack([masks[name] for name in classes])
    return resize_sample(Sample(image=image, mask=mask, meta={}), size, size)


def _render_star(args: tuple) -> tuple[np.ndarray, np.ndarray]:
    return render_one(*args)


def public_corpus(
    n: int,
    size: int = 64,
    seed: int = 0,
    table: str | Path = DEFAULT_TABLE,
    site: str = "public",
    view: str = "roi",
    roi_zoom: float = 3.0,
    roi_jitter: float = 0.08,
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
    bar = dict(total=n, desc=f"corpus ({site})", unit="sample", leave=False, disable=None if progress else True)
    if workers > 0:
        with ProcessPoolExecutor(workers) as pool:
            pairs = list(tqdm(pool.map(_render_star, jobs, chunksize=16), **bar))
    else:
        pairs = [_render_star(job) for job in tqdm(jobs, **bar)]
    images = np.stack([p[0] for p in pairs]) if pairs else np.zeros((0, 3, size, size), np.uint8)
    masks = np.stack([p[1] for p in pairs]) if pairs else np.zeros((0, len(classes), size, size), np.uint8)
    return images, masks
