"""Site acquisition styles (colour cast, gamma, blur, noise, illumination, field of view) and their loader."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from scipy.ndimage import gaussian_filter

from dsfed.errors import DsfedError, SourceError

__all__ = [
    "Acquisition",
    "FundusStyle",
    "PolypStyle",
    "SkinStyle",
    "Task",
    "apply_acquisition",
    "jitter_acquisition",
    "load_site_style",
    "load_site_table",
]

Task = Literal["fundus", "skin", "polyp"]
Positive = Annotated[float, Field(gt=0)]


class Acquisition(BaseModel):
    """How one site's camera turns the clean scene into pixels (applied after rendering).

    Attributes:
        gain: per-channel (R, G, B) colour cast, multiplies linear intensity.
        gamma: output = input ** gamma (> 1 darkens mid-tones).
        contrast: scales the deviation from the field-of-view mean.
        blur: Gaussian blur sigma in pixels of a 256 px image (scaled with image size).
        noise: std of additive Gaussian noise, in [0, 1] intensity units.
        illumination: strength of a linear illumination gradient across the image (0 = flat).
        illumination_angle: direction of the gradient's bright side in degrees (0 = right, 90 = down).
        vignette: fall-off of brightness toward the field-of-view edge (0 = none).
        fov_scale: field-of-view radius relative to half the image (> 1 crops the circle at the border).
        jitter: per-sample variation of all the above (relative, ~ log-normal std).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    gain: tuple[Positive, Positive, Positive] = (1.0, 1.0, 1.0)
    gamma: Annotated[float, Field(ge=0.2, le=5.0)] = 1.0
    contrast: Annotated[float, Field(ge=0.1, le=4.0)] = 1.0
    blur: Annotated[float, Field(ge=0.0, le=20.0)] = 0.0
    noise: Annotated[float, Field(ge=0.0, le=0.5)] = 0.0
    illumination: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    illumination_angle: float = 0.0
    vignette: Annotated[float, Field(ge=0.0, le=1.0)] = 0.2
    fov_scale: Annotated[float, Field(ge=0.5, le=2.0)] = 1.0
    jitter: Annotated[float, Field(ge=0.0, le=1.0)] = 0.05


class FundusStyle(Acquisition):
    """A fundus site: acquisition plus its population (pigmentation, cup/disc ratio distribution)."""

    pigment_mean: Annotated[float, Field(ge=0.0, le=1.0)] = 0.4
    pigment_std: Annotated[float, Field(ge=0.0, le=1.0)] = 0.15
    cdr_mean: Annotated[float, Field(ge=0.2, le=0.85)] = 0.45
    cdr_std: Annotated[float, Field(ge=0.0, le=0.5)] = 0.13


class SkinStyle(Acquisition):
    """A skin clinic: acquisition plus skin-tone distribution, hair, dermoscope-vignette frequency, lesion size.

    ``tone_mean`` 0 = very light, 1 = very dark; ``fov_scale`` is the dermoscope circle's radius;
    ``lesion_scale`` multiplies the lesion radius distribution (1: radius uniform in 0.2..0.42 half-images).
    """

    fov_scale: Annotated[float, Field(ge=0.5, le=2.0)] = 1.15
    tone_mean: Annotated[float, Field(ge=0.0, le=1.0)] = 0.3
    tone_std: Annotated[float, Field(ge=0.0, le=1.0)] = 0.15
    hair_prob: Annotated[float, Field(ge=0.0, le=1.0)] = 0.3
    hair_count: Annotated[float, Field(ge=0.0, le=200.0)] = 8.0
    dermoscope_prob: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5
    lesion_scale: Annotated[float, Field(ge=0.3, le=2.5)] = 1.0


class PolypStyle(Acquisition):
    """An endoscopy unit: acquisition plus polyp size, how often the lumen is in view, specular glints.

    ``polyp_size``: mean polyp radius in half-image units; ``fov_scale``: the scope's circular field.
    """

    fov_scale: Annotated[float, Field(ge=0.5, le=2.0)] = 1.1
    polyp_size: Annotated[float, Field(ge=0.05, le=0.5)] = 0.22
    lumen_prob: Annotated[float, Field(ge=0.0, le=1.0)] = 0.6
    specular: Annotated[float, Field(ge=0.0, le=40.0)] = 6.0


STYLE_MODELS: dict[str, type[Acquisition]] = {"fundus": FundusStyle, "skin": SkinStyle, "polyp": PolypStyle}

_TABLE_CACHE: dict[tuple[str, int, int], dict[str, dict[str, Acquisition]]] = {}


def load_site_table(path: Path) -> dict[str, dict[str, Acquisition]]:
    """Read and validate a sites table: ``{task: {site: style}}``.

    Raises:
        SourceError: ``<path>: <task>.<site>.<key>: <problem>`` for unreadable files or invalid styles.
    """
    from dsfed.config import read_yaml  # local: keeps this module importable without the config stack

    path = Path(path)
    try:
        st = path.stat()
    except OSError as exc:
        raise SourceError(f"{path}: cannot read the phantom sites table ({exc.strerror})") from exc
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    if key in _TABLE_CACHE:
        return _TABLE_CACHE[key]
    try:
        raw = read_yaml(path)
    except DsfedError as exc:
        raise SourceError(f"{path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise SourceError(f"{path}: top level must be a mapping of tasks ({', '.join(STYLE_MODELS)})")
    table: dict[str, dict[str, Acquisition]] = {}
    for task, sites in raw.items():
        if task not in STYLE_MODELS:
            raise SourceError(f"{path}: {task}: unknown task (expected {', '.join(STYLE_MODELS)})")
        if not isinstance(sites, dict) or not sites:
            raise SourceError(f"{path}: {task}: must be a non-empty mapping of site name -> style")
        model = STYLE_MODELS[task]
        table[task] = {}
        for site, values in sites.items():
            try:
                table[task][str(site)] = model.model_validate(values or {})
            except ValidationError as exc:
                err = exc.errors()[0]
                loc = ".".join(str(p) for p in (task, site, *err["loc"]))
                msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
                raise SourceError(f"{path}: {loc}: {msg}") from exc
    _TABLE_CACHE[key] = table
    return table


def load_site_style(path: Path, task: Task, site: str, field: str = "site") -> Acquisition:
    """The style of ``site`` for ``task`` in the table at ``path``.

    Raises:
        SourceError: naming ``field``, the file and the site, listing the available sites.
    """
    table = load_site_table(path)
    sites = table.get(task, {})
    if site not in sites:
        available = ", ".join(sites) or "none"
        raise SourceError(f"{field}: no {task} site {site!r} in {path} (available: {available})")
    return sites[site]


def jitter_acquisition(style: Acquisition, rng: np.random.Generator) -> Acquisition:
    """A per-sample variant of ``style`` (always draws the same number of random numbers)."""
    j = style.jitter
    z = rng.standard_normal(10)
    gain = tuple(float(g * math.exp(0.5 * j * zi)) for g, zi in zip(style.gain, z[:3], strict=True))
    return style.model_copy(
        update={
            "gain": gain,
            "gamma": float(np.clip(style.gamma * math.exp(0.5 * j * z[3]), 0.2, 5.0)),
            "contrast": float(np.clip(style.contrast * math.exp(0.5 * j * z[4]), 0.1, 4.0)),
            "blur": float(style.blur * math.exp(j * z[5])),
            "noise": float(style.noise * math.exp(j * z[6])),
            "illumination": float(np.clip(style.illumination + 0.3 * j * abs(z[7]), 0.0, 1.0)),
            "illumination_angle": float(style.illumination_angle + 90.0 * j * z[8]),
            "fov_scale": float(np.clip(style.fov_scale * math.exp(0.1 * j * z[9]), 0.5, 2.0)),
        }
    )


def apply_acquisition(
    clean: np.ndarray,
    acq: Acquisition,
    rng: np.random.Generator,
    fov: np.ndarray | None = None,
    vignette_radius: float = 1.0,
) -> np.ndarray:
    """Turn a clean scene into a site's photograph.

    Args:
        clean: (S, S, 3) float32 linear intensities in ~[0, 1]; modified in place.
        acq: the (jittered) acquisition settings.
        rng: draws the sensor noise.
        fov: (S, S) float32 field-of-view opacity in [0, 1] (black outside), or None for no aperture.
        vignette_radius: radius (half-image units) at which the vignette reaches full strength.

    Returns:
        (S, S, 3) uint8 RGB.
    """
    from dsfed.data.phantom.draw import grid

    size = clean.shape[0]
    img = clean
    if acq.blur > 0.05:
        sigma = acq.blur * size / 256.0
        img = gaussian_filter(img, sigma=(sigma, sigma, 0.0), mode="nearest", truncate=3.0)
    x, y = grid(size)
    angle = math.radians(acq.illumination_angle)
    light = 1.0 + acq.illumination * (x * math.cos(angle) + y * math.sin(angle))
    r2 = (x * x + y * y) * (1.0 / (vignette_radius * vignette_radius))
    light = light * np.clip(1.0 - acq.vignette * r2 * np.sqrt(r2), 0.05, None)
    img = img * (light[..., None] * np.asarray(acq.gain, dtype=np.float32))
    if fov is not None:
        weight = fov.reshape(-1)
        mean = (img.reshape(-1, 3) * weight[:, None]).sum(0) / max(float(weight.sum()), 1.0)
    else:
        mean = img.reshape(-1, 3).mean(0)
    img = mean + acq.contrast * (img - mean)
    np.clip(img, 0.0, 1.0, out=img)
    if abs(acq.gamma - 1.0) > 1e-3:
        img = img ** np.float32(acq.gamma)
    noise = rng.standard_normal(img.shape, dtype=np.float32) * np.float32(acq.noise)
    if fov is not None:
        img = img * fov[..., None]
        noise *= (0.2 + 0.8 * fov)[..., None]
    img += noise
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
