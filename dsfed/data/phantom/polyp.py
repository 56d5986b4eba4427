"""Synthetic colonoscopy frames with a polyp mask: the grey-pink endoscopic modality of the public corpus."""

from __future__ import annotations

import math

import numpy as np

from dsfed.data.phantom.draw import Stroke, grid, rasterize, smooth_noise
from dsfed.data.phantom.styles import PolypStyle, apply_acquisition, jitter_acquisition

__all__ = ["POLYP_CLASSES", "render_polyp"]

POLYP_CLASSES = ("polyp",)

_MUCOSA = np.array([0.86, 0.48, 0.42], dtype=np.float32)  # linear RGB of healthy colon mucosa under white light


def _folds(rng: np.random.Generator, lumen: np.ndarray, count: int) -> list[Stroke]:
    """Haustral folds: arcs around the lumen at increasing radii (the tunnel seen from inside)."""
    strokes = []
    for k in range(count):
        radius = 0.25 + 0.28 * k + rng.uniform(-0.06, 0.06)
        start = rng.uniform(0.0, 2 * math.pi)
        span = rng.uniform(0.8, 2.2)
        t = np.linspace(start, start + span, 32, dtype=np.float32)
        wobble = 1.0 + 0.08 * np.sin(3 * t + rng.uniform(0, 6.3))
        pts = np.stack([lumen[0] + radius * wobble * np.cos(t), lumen[1] + radius * wobble * np.sin(t)], axis=1)
        widths = np.full(len(t), rng.uniform(0.015, 0.035), dtype=np.float32)
        strokes.append(Stroke(pts.astype(np.float32), widths))
    return strokes


def render_polyp(
    rng: np.random.Generator, size: int, style: PolypStyle
) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, float]]:
    """Render one colonoscopy frame as seen by the endoscope ``style``.

    Returns:
        image: (S, S, 3) uint8 RGB.
        masks: ``polyp`` (S, S) bool, the polyp's outline r(theta).
        meta: ``polyp_area`` (fraction of the image), ``lumen`` (0/1: the dark lumen is in view).
    """
    acq = jitter_acquisition(style, rng)
    x, y = grid(size)
    centre = np.clip(rng.normal(0.0, 0.25, 2), -0.45, 0.45)
    r0 = float(np.clip(rng.normal(style.polyp_size, 0.06), 0.08, 0.45))
    ks = np.arange(2, 5)
    amps = rng.normal(0.0, 0.06, 3)
    phases = rng.uniform(0.0, 2 * math.pi, 3)
    tilt, elong = rng.uniform(0.0, math.pi), rng.uniform(0.75, 1.0)
    show_lumen = rng.random() < style.lumen_prob
    lumen = np.clip(rng.normal(0.0, 0.45, 2), -0.8, 0.8).astype(np.float32)
    n_folds = int(rng.integers(2, 5))
    n_spec = int(rng.poisson(style.specular))
    tint = rng.normal(0.0, 0.06, 3).astype(np.float32)

    # mucosa: pink-red, mottled, faint vessels; darker toward the lumen
    img = np.empty((size, size, 3), dtype=np.float32)
    img[...] = np.clip(_MUCOSA + tint, 0.05, 1.0)
    low, mid = smooth_noise(rng, size, 4), smooth_noise(rng, size, 16)
    img *= (1.0 + 0.06 * low + 0.03 * mid)[..., None]
    vessels = np.exp(-((smooth_noise(rng, size, max(8, size // 6)) / 0.12) ** 2))
    img[..., 1:] *= (1.0 - 0.12 * vessels)[..., None]
    if show_lumen:
        d = np.sqrt((x - lumen[0]) ** 2 + (y - lumen[1]) ** 2)
        img *= (0.15 + 0.85 * np.clip(d / 0.7, 0.0, 1.0) ** 0.8)[..., None]
    folds = rasterize(_folds(rng, lumen, n_folds), size)
    img *= (1.0 - 0.35 * folds)[..., None]

    # the polyp: a raised, slightly redder dome lit from the endoscope (brighter top, shaded rim)
    c, s = math.cos(tilt), math.sin(tilt)
    dx, dy = x - centre[0], y - centre[1]
    u, v = c * dx + s * dy, (-s * dx + c * dy) / elong
    theta = np.arctan2(v, u)
    radius = np.ones_like(theta)
    for k, a, ph in zip(ks, amps, phases, strict=True):
        radius += np.float32(a) * np.cos(k * theta + np.float32(ph))
    rho = np.sqrt(u * u + v * v) / (np.float32(r0) * radius)
    dome = np.sqrt(np.clip(1.0 - rho * rho, 0.0, 1.0))
    shade = 0.75 + 0.45 * dome - 0.25 * np.clip((dy / r0), -1.0, 1.0) * dome
    polyp_col = np.clip(_MUCOSA * np.array([1.02, 0.86, 0.86], dtype=np.float32) + tint, 0.05, 1.0)
    surface = polyp_col * (1.0 + 0.1 * smooth_noise(rng, size, 10))[..., None]
    alpha = np.clip((1.0 - rho) / 0.08 + 0.5, 0.0, 1.0)[..., None]
    img = img * (1.0 - alpha) + surface * shade[..., None] * alpha

    # specular highlights: small saturated spots, more on the wet dome
    for _ in range(n_spec):
        on_polyp = rng.random() < 0.6
        sx, sy = (centre + rng.normal(0.0, r0 * 0.5, 2)) if on_polyp else rng.uniform(-0.9, 0.9, 2)
        sr = rng.uniform(0.01, 0.035)
        spot = np.exp(-((x - sx) ** 2 + (y - sy) ** 2) / (2 * sr * sr))
        img = img + (0.9 * spot)[..., None]

    r = np.sqrt(x * x + y * y)
    fov = np.clip((acq.fov_scale - r) / 0.05 + 0.5, 0.0, 1.0).astype(np.float32)
    image = apply_acquisition(np.clip(img, 0.0, 1.6).astype(np.float32), acq, rng, fov=fov, vignette_radius=math.sqrt(2.0))
    mask = (rho <= 1.0) & (fov > 0.5)
    return image, {"polyp": mask}, {"polyp_area": float(mask.mean()), "lumen": float(show_lumen)}
