"""Deterministic multi-site phantom data (fundus with disc/cup, skin with lesion, colonoscopy with polyp)."""

from __future__ import annotations

import hashlib

import numpy as np

from dsfed.data.phantom.fundus import FUNDUS_CLASSES, render_fundus
from dsfed.data.phantom.polyp import POLYP_CLASSES, render_polyp
from dsfed.data.phantom.skin import SKIN_CLASSES, render_skin
from dsfed.data.phantom.styles import FundusStyle, PolypStyle, SkinStyle, load_site_style, load_site_table

__all__ = [
    "FUNDUS_CLASSES",
    "POLYP_CLASSES",
    "RENDERERS",
    "SKIN_CLASSES",
    "TASK_CLASSES",
    "FundusStyle",
    "PolypStyle",
    "SkinStyle",
    "load_site_style",
    "load_site_table",
    "render_fundus",
    "render_polyp",
    "render_skin",
    "sample_rng",
    "stable_hash",
]

RENDERERS = {"fundus": render_fundus, "skin": render_skin, "polyp": render_polyp}
TASK_CLASSES: dict[str, tuple[str, ...]] = {"fundus": FUNDUS_CLASSES, "skin": SKIN_CLASSES, "polyp": POLYP_CLASSES}


def stable_hash(text: str) -> int:
    """A 64-bit hash of ``text`` that is the same in every process (unlike the salted ``hash()``)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def sample_rng(seed: int, site: str, index: int) -> np.random.Generator:
    """The generator of sample ``index`` of ``site``: depends only on (seed, site, index)."""
    return np.random.default_rng([seed % 2**64, stable_hash(site), index])
