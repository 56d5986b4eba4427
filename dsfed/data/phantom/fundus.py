"""Synthetic retinal fundus photographs with optic disc and optic cup masks."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dsfed.data.phantom.draw import Stroke, grid, rasterize, smooth_noise
from dsfed.data.phantom.styles import FundusStyle, apply_acquisition, jitter_acquisition

__all__ = ["FUNDUS_CLASSES", "render_fundus"]

FUNDUS_CLASSES = ("optic_disc", "optic_cup")


@dataclass(frozen=True)
class _Geometry:
    """Scene layout in half-image units (x right, y down, image spans -1..1)."""

    fov: float  # field-of-view radius
    side: int  # +1: disc right of centre (right eye), -1: left
    disc: tuple[float, float]  # disc centre
    disc_axes: tuple[float, float]  # (horizontal, vertical) semi-axes before rotation
    rotation: float  # radians
    cup_offset: tuple[float, float]  # cup centre in the disc's rotated frame
    cup_axes: tuple[float, float]
    macula: tuple[float, float]
    pigment: float


def _geometry(rng: np.random.Generator, style: FundusStyle, fov: float) -> _Geometry:
    side = 1 if rng.random() < 0.5 else -1
    diameter = 2.0 * rng.uniform(0.12, 0.18)  # 12-18 % of the image width
    b_d = 0.5 * diameter * rng.uniform(1.0, 1.1)
    a_d = 0.5 * diameter * rng.uniform(0.86, 1.0)
    rotation = math.radians(rng.normal(0.0, 8.0))
    vcdr = float(np.clip(rng.normal(style.cdr_mean, style.cdr_std), 0.2, 0.85))
    hcdr = vcdr * rng.uniform(0.78, 0.97)
    a_c, b_c = hcdr * a_d, vcdr * b_d
    temporal = -side
    ox = temporal * rng.uniform(0.0, 0.6) * (a_d - a_c)
    oy = rng.uniform(-0.25, 0.25) * (b_d - b_c)
    t = np.linspace(0, 2 * math.pi, 48, endpoint=False)
    for _ in range(20):  # shrink the offset until the cup ellipse lies inside the disc
        px, py = ox + a_c * np.cos(t), oy + b_c * np.sin(t)
        if np.max((px / a_d) ** 2 + (py / b_d) ** 2) <= 0.95**2:
            break
        ox, oy = 0.7 * ox, 0.7 * oy
    else:
        ox, oy = 0.0, 0.0
    reach = min(fov, 1.0)
    cx = side * rng.uniform(0.3, 0.5) * reach
    cy = rng.normal(0.0, 0.06) * reach
    limit = reach - max(a_d, b_d) - 0.04
    norm = math.hypot(cx, cy)
    if norm > limit:
        cx, cy = cx * limit / norm, cy * limit / norm
    dist = 2.5 * diameter * rng.uniform(0.9, 1.1)
    macula = (cx + temporal * dist, cy + 0.3 * diameter + rng.normal(0.0, 0.05))
    pigment = float(np.clip(rng.normal(style.pigment_mean, style.pigment_std), 0.0, 1.0))
    return _Geometry(fov, side, (cx, cy), (a_d, b_d), rotation, (ox, oy), (a_c, b_c), macula, pigment)


def _cup_centre(g: _Geometry) -> tuple[float, float]:
    c, s = math.cos(g.rotation), math.sin(g.rotation)
    ox, oy = g.cup_offset
    return g.disc[0] + c * ox - s * oy, g.disc[1] + s * ox + c * oy


def _grow(
    rng: np.random.Generator,
    g: _Geometry,
    start: tuple[float, float],
    heading: float,
    width: float,
    curvature: float,
    length: float,
    depth: int,
    out: list[Stroke],
) -> None:
    """Random-walk one vessel from ``start``; spawn thinner branches; append its strokes to ``out``."""
    ds = 0.025
    x, y = start
    pts = [(x, y)]
    ws = [width]
    travelled = 0.0
    mx, my = g.macula
    dd = 2.0 * g.disc_axes[1]
    next_branch = rng.exponential(0.35 + 0.15 * depth)
    while travelled < length and width > 0.0035:
        heading += curvature * ds + rng.normal(0.0, 0.09)
        curvature *= math.exp(-ds / 0.9)
        x += ds * math.cos(heading)
        y += ds * math.sin(heading)
        travelled += ds
        width *= math.exp(-ds / (1.1 if depth == 0 else 0.7))
        pts.append((x, y))
        ws.append(width)
        if math.hypot(x, y) > g.fov * 0.99 or abs(x) > 1.02 or abs(y) > 1.02:
            break
        if math.hypot(x - mx, y - my) < 0.35 * dd:
            break
        if travelled >= next_branch and depth < 3:
            next_branch = travelled + rng.exponential(0.3 + 0.15 * depth)
            sign = 1.0 if rng.random() < 0.5 else -1.0
            _grow(
                rng,
                g,
                (x, y),
                heading + sign * rng.uniform(0.45, 1.1),
                width * rng.uniform(0.45, 0.75),
                rng.normal(0.0, 1.5),
                (length - travelled) * rng.uniform(0.4, 0.9),
                depth + 1,
                out,
            )
            width *= 0.9
    if len(pts) > 1:
        out.append(Stroke(np.asarray(pts, dtype=np.float32), np.asarray(ws, dtype=np.float32)))


def _vessels(rng: np.random.Generator, g: _Geometry) -> tuple[list[Stroke], list[Stroke]]:
    """Arteries and veins: four arcades (temporal ones arching round the macula) plus small nasal trunks."""
    arteries: list[Stroke] = []
    veins: list[Stroke] = []
    cx, cy = _cup_centre(g)
    dd = 2.0 * g.disc_axes[1]
    t = -g.side  # temporal x direction
    w0 = 0.085 * dd
    dist = math.hypot(g.macula[0] - g.disc[0], g.macula[1] - g.disc[1])
    for vertical in (-1.0, 1.0):  # superior, inferior
        for kind, out, scale in (("artery", arteries, 1.0), ("vein", veins, 1.3)):
            jitter = rng.normal(0.0, 0.12)
            # temporal arcade: leaves upward/downward, bends toward the macula side
            heading = math.atan2(vertical, t * rng.uniform(0.15, 0.45)) + jitter
            curvature = -vertical * t * rng.uniform(1.3, 2.0) / max(dist, 0.3)
            start = (cx + rng.normal(0.0, 0.15) * g.cup_axes[0], cy + vertical * 0.3 * g.cup_axes[1])
            _grow(rng, g, start, heading, w0 * scale, curvature, 2.2, 0, out)
            # nasal trunk
            heading = math.atan2(vertical, -t * rng.uniform(0.4, 1.2)) + jitter
            _grow(rng, g, start, heading, 0.7 * w0 * scale, vertical * t * rng.uniform(0.3, 1.2), 1.2, 1, out)
    for _ in range(int(rng.integers(1, 4))):  # small macular / nasal twigs
        heading = math.atan2(rng.normal(0.0, 0.3), t if rng.random() < 0.6 else -t)
        out = arteries if rng.random() < 0.5 else veins
        _grow(rng, g, (cx, cy), heading, 0.45 * w0, rng.normal(0.0, 1.0), 0.8, 2, out)
    return arteries, veins


def _soft_ellipse(
    x: np.ndarray, y: np.ndarray, centre: tuple[float, float], axes: tuple[float, float], rotation: float
) -> np.ndarray:
    """Elliptical radius (S, S) float32: 1 on the ellipse boundary."""
    c, s = math.cos(rotation), math.sin(rotation)
    dx, dy = x - centre[0], y - centre[1]
    xr = c * dx + s * dy
    yr = -s * dx + c * dy
    return np.sqrt((xr / axes[0]) ** 2 + (yr / axes[1]) ** 2)


def render_fundus(
    rng: np.random.Generator, size: int, style: FundusStyle
) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, float]]:
    """Render one fundus photograph as seen by the site ``style``.

    Returns:
        image: (S, S, 3) uint8 RGB, black outside the circular field of view.
        masks: ``optic_disc`` and ``optic_cup``, each (S, S) bool hard ellipses; cup inside disc.
        meta: ``cup_disc_ratio`` (vertical), ``cup_disc_ratio_h``, ``disc_diameter`` (fraction of the
        width), ``fov_radius`` (half-image units), ``eye`` (1 right, 0 left), ``pigment``.
    """
    acq = jitter_acquisition(style, rng)
    g = _geometry(rng, style, acq.fov_scale)
    arteries, veins = _vessels(rng, g)
    tone = rng.uniform(-1.0, 1.0, 6)

    x, y = grid(size)
    r = np.sqrt(x * x + y * y)
    half_px = size / 2.0
    fov = np.clip((g.fov - r) * half_px + 0.5, 0.0, 1.0).astype(np.float32)

    # retina: orange-red, darker with more pigment, smooth low-frequency and faint choroidal texture
    p = g.pigment
    base = np.array([0.86 - 0.30 * p, 0.46 - 0.24 * p, 0.22 - 0.13 * p], dtype=np.float32)
    base *= 1.0 + 0.06 * tone[:3].astype(np.float32)
    low = smooth_noise(rng, size, 4)
    mid = smooth_noise(rng, size, 10)
    fine = smooth_noise(rng, size, max(8, size // 6))
    img = np.empty((size, size, 3), dtype=np.float32)
    img[...] = base
    img[..., 0] *= 1.0 + 0.05 * low + 0.02 * mid
    img[..., 1] *= 1.0 + 0.09 * low + 0.06 * mid + 0.03 * fine
    img[..., 2] *= 1.0 + 0.10 * low + 0.05 * mid + 0.04 * fine

    # macula and fovea: darker, browner
    dd = 2.0 * g.disc_axes[1]
    m2 = (x - g.macula[0]) ** 2 + (y - g.macula[1]) ** 2
    mac = np.exp(-m2 / (2 * (0.75 * dd) ** 2)) * 0.30 + np.exp(-m2 / (2 * (0.12 * dd) ** 2)) * 0.18
    img *= (1.0 - mac[..., None] * np.array([0.9, 1.1, 1.2], dtype=np.float32)).clip(0.2, None)

    # optic disc (yellow-pink rim, soft edge, faint peripapillary halo) and paler cup
    rho_d = _soft_ellipse(x, y, g.disc, g.disc_axes, g.rotation)
    cup_centre = _cup_centre(g)
    rho_c = _soft_ellipse(x, y, cup_centre, g.cup_axes, g.rotation)
    halo = np.clip(1.0 - (rho_d - 1.0) / 0.35, 0.0, 1.0) * (rho_d > 1.0)
    img *= (1.0 + 0.12 * halo)[..., None]
    edge = 0.08 + 0.04 * (tone[3] + 1.0)
    a_disc = np.clip((1.0 - rho_d) / edge + 0.5, 0.0, 1.0)
    a_cup = np.clip((1.0 - rho_c) / 0.25 + 0.5, 0.0, 1.0) ** 1.5
    rim = np.array([1.0, 0.80 + 0.06 * tone[4], 0.55 + 0.08 * tone[5]], dtype=np.float32)
    cup = np.array([1.0, 0.96, 0.84], dtype=np.float32)
    disc_col = rim * (1.0 - a_cup[..., None]) + cup * a_cup[..., None]
    disc_col *= (1.0 + 0.04 * mid)[..., None]
    img = img * (1.0 - a_disc[..., None]) + disc_col * a_disc[..., None]

    # vessels over everything: veins darker and wider than arteries
    cov_a = rasterize(arteries, size)
    cov_v = rasterize(veins, size)
    img *= 1.0 - cov_v[..., None] * np.array([0.45, 0.70, 0.65], dtype=np.float32)
    img *= 1.0 - cov_a[..., None] * np.array([0.28, 0.55, 0.50], dtype=np.float32)

    image = apply_acquisition(img, acq, rng, fov=fov, vignette_radius=g.fov)
    disc_mask = rho_d <= 1.0
    cup_mask = (rho_c <= 1.0) & disc_mask
    meta = {
        "cup_disc_ratio": float(g.cup_axes[1] / g.disc_axes[1]),
        "cup_disc_ratio_h": float(g.cup_axes[0] / g.disc_axes[0]),
        "disc_diameter": float(g.disc_axes[1]),
        "fov_radius": float(g.fov),
        "eye": float(g.side > 0),
        "pigment": float(g.pigment),
    }
    return image, {"optic_disc": disc_mask, "optic_cup": cup_mask}, meta


def crop_disc_roi(
    image: np.ndarray, masks: dict[str, np.ndarray], rng: np.random.Generator, size: int, jitter: float
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A disc-centred square window, as the ROI crops of FedDG / REFUGE fundus sets.

    Args:
        image: (R, R, 3) uint8 full fundus. masks: name -> (R, R) bool, with ``optic_disc``.
        size: window side S in pixels (R > S); beyond the image border the window is black.
        jitter: the window centre moves up to ``jitter * S`` from the disc centre on each axis (a
            disc detector is never exact).

    Returns:
        image (S, S, 3) uint8 and masks name -> (S, S) bool.
    """
    rows, cols = np.nonzero(masks["optic_disc"])
    centre = np.array([rows.mean(), cols.mean()]) + rng.uniform(-jitter, jitter, 2) * size
    top, left = (np.round(centre - size / 2).astype(int) + size).tolist()  # + size: offset into the padding

    def window(array: np.ndarray) -> np.ndarray:
        pad = [(size, size), (size, size)] + [(0, 0)] * (array.ndim - 2)
        return np.pad(array, pad)[top : top + size, left : left + size].copy()

    return window(image), {name: window(mask) for name, mask in masks.items()}
