"""Synthetic dermoscopy / clinical skin-lesion photographs with a lesion mask."""

from __future__ import annotations

import math

import numpy as np

from dsfed.data.phantom.draw import Stroke, grid, rasterize, smooth_noise
from dsfed.data.phantom.styles import SkinStyle, apply_acquisition, jitter_acquisition

__all__ = ["SKIN_CLASSES", "render_skin"]

SKIN_CLASSES = ("lesion",)

# skin colour along the tone axis 0 (very light) .. 1 (very dark), linear RGB
_TONES = np.array(
    [[0.95, 0.80, 0.71], [0.88, 0.67, 0.55], [0.74, 0.52, 0.38], [0.52, 0.34, 0.23], [0.32, 0.20, 0.13]],
    dtype=np.float32,
)


def _skin_colour(tone: float) -> np.ndarray:
    """(3,) float32 skin colour for ``tone`` in [0, 1]."""
    pos = tone * (len(_TONES) - 1)
    k = min(int(pos), len(_TONES) - 2)
    f = pos - k
    return (1 - f) * _TONES[k] + f * _TONES[k + 1]


def _hairs(rng: np.random.Generator, count: int) -> list[Stroke]:
    """Thin, slightly curved hairs as quadratic Bezier strokes crossing part of the image."""
    strokes = []
    t = np.linspace(0.0, 1.0, 24, dtype=np.float32)[:, None]
    for _ in range(count):
        p0 = rng.uniform(-1.1, 1.1, 2)
        angle = rng.uniform(0, 2 * math.pi)
        length = rng.uniform(0.5, 1.6)
        p2 = p0 + length * np.array([math.cos(angle), math.sin(angle)])
        p1 = 0.5 * (p0 + p2) + rng.normal(0.0, 0.15, 2)
        pts = ((1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2).astype(np.float32)
        width = rng.uniform(0.006, 0.016)
        widths = (width * (1.0 - 0.5 * t[:, 0])).astype(np.float32)
        strokes.append(Stroke(pts, widths))
    return strokes


def render_skin(
    rng: np.random.Generator, size: int, style: SkinStyle
) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, float]]:
    """Render one skin-lesion photograph as seen by the clinic ``style``.

    Returns:
        image: (S, S, 3) uint8 RGB.
        masks: ``lesion`` (S, S) bool, the lesion's radial-function outline r(theta).
        meta: ``tone`` (0 light .. 1 dark), ``lesion_area`` (fraction of the image), ``hair`` (0/1),
        ``dermoscope`` (0/1).
    """
    acq = jitter_acquisition(style, rng)
    tone = float(np.clip(rng.normal(style.tone_mean, style.tone_std), 0.0, 1.0))
    centre = np.clip(rng.normal(0.0, 0.12, 2), -0.25, 0.25)
    r0 = rng.uniform(0.2, 0.42) * style.lesion_scale  # x 1.0 is exact: the default renders as before
    ks = np.arange(2, 7)
    amps = rng.normal(0.0, 1.0, 5) * (0.11 / (ks - 1) ** 0.6)
    total = float(np.abs(amps).sum())
    if total > 0.55:
        amps *= 0.55 / total
    phases = rng.uniform(0.0, 2 * math.pi, 5)
    elong = rng.uniform(0.8, 1.0)
    tilt = rng.uniform(0.0, math.pi)
    fuzz = rng.uniform(0.08, 0.3)
    dark = rng.beta(2.0, 2.5)  # 0 light tan .. 1 very dark lesion
    centre_dark = rng.uniform(-0.4, 0.6)  # > 0: darker centre, < 0: darker rim
    veil = rng.random() < 0.2
    network = rng.uniform(0.0, 0.3)
    hair = rng.random() < style.hair_prob
    n_hair = int(rng.poisson(style.hair_count)) if hair else 0
    scope = rng.random() < style.dermoscope_prob
    redness = rng.uniform(0.0, 1.0)
    hairs = _hairs(rng, n_hair)

    x, y = grid(size)
    # lesion geometry: rotated, slightly elongated frame; rho = r / r(theta) (1 on the outline)
    c, s = math.cos(tilt), math.sin(tilt)
    dx, dy = x - centre[0], y - centre[1]
    u = c * dx + s * dy
    v = (-s * dx + c * dy) / elong
    theta = np.arctan2(v, u)
    radius = np.ones_like(theta)
    for k, a, ph in zip(ks, amps, phases, strict=True):
        radius += np.float32(a) * np.cos(k * theta + np.float32(ph))
    rho = np.sqrt(u * u + v * v) / (np.float32(r0) * radius)

    # skin: tone colour, blotchy redness, fine pores
    skin = _skin_colour(tone)
    low = smooth_noise(rng, size, 3)
    mid = smooth_noise(rng, size, 12)
    fine = smooth_noise(rng, size, max(8, size // 3))
    img = np.empty((size, size, 3), dtype=np.float32)
    img[...] = skin
    blotch = 0.035 * (1.0 + redness) * np.clip(low + 0.3, 0.0, None)
    img[..., 0] *= 1.0 + 0.5 * blotch + 0.02 * mid
    img[..., 1] *= 1.0 - blotch + 0.03 * mid
    img[..., 2] *= 1.0 - 0.8 * blotch + 0.03 * mid
    pores = np.clip(fine - 1.6, 0.0, None) * 0.05 + 0.02 * fine
    img *= (1.0 - pores)[..., None]

    # lesion: mottled browns (optionally blue-grey veil), pigment network, fuzzy border
    mottle_a = smooth_noise(rng, size, 5)
    mottle_b = smooth_noise(rng, size, 14)
    net = smooth_noise(rng, size, max(10, size // 4))
    light = skin * np.array([0.74, 0.58, 0.48], dtype=np.float32)
    deep = np.array([0.20, 0.11, 0.07], dtype=np.float32) * (1.0 - 0.4 * tone)
    depth = 0.15 + 0.6 * dark + 0.22 * mottle_a + 0.1 * mottle_b + centre_dark * (0.5 - np.clip(rho, 0, 1))
    depth = np.clip(depth, 0.0, 1.0)[..., None]
    lesion = light * (1.0 - depth) + deep * depth
    if veil:
        grey = np.array([0.42, 0.42, 0.48], dtype=np.float32) * (1.0 - 0.3 * tone)
        w = np.clip(0.35 * smooth_noise(rng, size, 5), 0.0, 0.5) * np.clip((0.8 - rho) / 0.3, 0.0, 1.0)
        lesion = lesion * (1.0 - w[..., None]) + grey * w[..., None]
    lesion *= (1.0 - network * np.exp(-((net / 0.3) ** 2)) * np.clip(1.2 - rho, 0.0, 1.0))[..., None]
    edge = rho + 0.05 * mottle_b
    alpha = np.clip((1.0 - edge) / fuzz + 0.5, 0.0, 1.0)[..., None]
    img = img * (1.0 - alpha) + lesion * alpha

    if hairs:
        cov = rasterize(hairs, size)[..., None]
        hair_col = np.array([0.10, 0.07, 0.05], dtype=np.float32)
        img = img * (1.0 - 0.9 * cov) + hair_col * (0.9 * cov)

    fov = None
    if scope:
        r = np.sqrt(x * x + y * y)
        fov = np.clip((acq.fov_scale - r) / 0.06 + 0.5, 0.0, 1.0).astype(np.float32)
    image = apply_acquisition(img, acq, rng, fov=fov, vignette_radius=math.sqrt(2.0))
    mask = rho <= 1.0
    meta = {
        "tone": tone,
        "lesion_area": float(mask.mean()),
        "hair": float(hair),
        "dermoscope": float(scope),
    }
    return image, {"lesion": mask}, meta
