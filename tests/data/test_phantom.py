"""Phantom generators and the ``phantom`` source: determinism, geometry, site differences, errors."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import binary_erosion, laplace

from dsfed.config import DataConfig
from dsfed.data.phantom import RENDERERS, SkinStyle, load_site_table, render_skin, sample_rng, stable_hash
from dsfed.data.phantom.draw import grid
from dsfed.data.settings import PhantomSource
from dsfed.data.sources.phantom import build_phantom
from dsfed.errors import SourceError

REPO = Path(__file__).resolve().parents[2]
TABLE = REPO / "data/phantom/sites.yaml"
SAMFED_TABLE = REPO / "data/phantom/samfed_sites.yaml"
SAMFED_SITES = ["public", "samfed_a", "samfed_b", "samfed_c", "samfed_d"]
FUNDUS_SITES = ["site_a", "site_b", "site_c", "site_d"]
SKIN_SITES = ["clinic_a", "clinic_b", "clinic_c"]


def render(task: str, site: str, i: int, size: int = 64, seed: int = 0):
    style = load_site_table(TABLE)[task][site]
    return RENDERERS[task](sample_rng(seed, site, i), size, style)


def source(site: str = "site_a", task: str = "fundus", n: int = 6, seed: int = 0, **data):
    spec = PhantomSource(kind="phantom", task=task, path=Path("data/phantom/sites.yaml"), site=site, n=n, seed=seed)
    cfg = DataConfig(**{"image_size": 48, "mask_size": 24, **data})
    return build_phantom(spec, cfg, REPO, "clients.x.source")


@cache
def fundus_batch(site: str = "site_a", count: int = 200, size: int = 64):
    return [render("fundus", site, i, size) for i in range(count)]


# --------------------------------------------------------------------------------------------------
# determinism
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "site"),
    [("fundus", "site_a"), ("fundus", "site_c"), ("fundus", "public"), ("skin", "clinic_a"), ("skin", "clinic_c")],
)
def test_same_key_same_sample_other_index_differs(task: str, site: str) -> None:
    img1, masks1, meta1 = render(task, site, 3)
    img2, masks2, meta2 = render(task, site, 3)
    np.testing.assert_array_equal(img1, img2)
    for name in masks1:
        np.testing.assert_array_equal(masks1[name], masks2[name])
    assert meta1 == meta2
    other, _, _ = render(task, site, 4)
    assert np.abs(other.astype(int) - img1.astype(int)).mean() > 5
    reseeded, _, _ = render(task, site, 3, seed=1)
    assert np.abs(reseeded.astype(int) - img1.astype(int)).mean() > 5


def test_stable_hash_is_not_salted() -> None:
    assert stable_hash("site_a") == 1162003934181741099
    assert stable_hash("site_a") != stable_hash("site_b")


def test_samples_independent_of_n_and_load_order() -> None:
    small, big = source(n=3), source(n=8)
    items_small, items_big = small.items(), big.items()
    assert [it.name for it in items_small] == ["site_a_0000", "site_a_0001", "site_a_0002"]
    assert [it.name for it in items_big[:3]] == [it.name for it in items_small]
    assert items_big[5].label == "phantom/fundus/site_a/0005"
    assert items_big[0].files == (REPO / "data/phantom/sites.yaml",)
    forward = [small.load(it) for it in items_small]
    backward = [big.load(it) for it in reversed(items_big[:3])][::-1]
    for a, b in zip(forward, backward, strict=True):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.mask, b.mask)


# --------------------------------------------------------------------------------------------------
# shapes, classes, errors
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "site", "classes", "size"),
    [
        ("fundus", "site_b", ["optic_disc", "optic_cup"], 48),
        ("fundus", "site_e", ["optic_cup"], 100),
        ("fundus", "site_d", ["optic_disc", "optic_cup"], 16),
        ("skin", "clinic_b", ["lesion"], 64),
        ("skin", "clinic_c", ["lesion"], 257),
    ],
)
def test_load_shapes_and_dtypes(task: str, site: str, classes: list[str], size: int) -> None:
    src = source(site, task, n=2, classes=classes, image_size=size, mask_size=8)
    sample = src.load(src.items()[1])
    assert sample.image.shape == (size, size, 3) and sample.image.dtype == np.uint8
    assert sample.mask.shape == (len(classes), size, size) and sample.mask.dtype == np.bool_
    assert sample.mask.any(axis=(1, 2)).all()
    assert all(isinstance(v, float) for v in sample.meta.values())


def test_mask_channels_follow_data_classes() -> None:
    item = source(n=1).items()[0]
    a = source(n=1, classes=["optic_disc", "optic_cup"]).load(item)
    b = source(n=1, classes=["optic_cup", "optic_disc"]).load(item)
    np.testing.assert_array_equal(a.mask[::-1], b.mask)
    assert b.mask[0].sum() < b.mask[1].sum()
    assert 0.2 <= a.meta["cup_disc_ratio"] <= 0.85


def test_class_the_task_does_not_make_is_an_error() -> None:
    src = source(classes=["optic_disc", "lesion"])
    with pytest.raises(SourceError, match=r"clients\.x\.source\.task: .*'fundus'.*'lesion'"):
        src.load(src.items()[0])


def test_unknown_site_names_file_site_and_choices() -> None:
    with pytest.raises(SourceError) as info:
        source("site_z")
    msg = str(info.value)
    assert "clients.x.source.site" in msg and "'site_z'" in msg and str(TABLE) in msg
    assert "site_a, site_b, site_c, site_d" in msg


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("fundus:\n  site_a:\n    gama: 1.0\n", "fundus.site_a.gama: unknown key"),
        ("fundus:\n  site_a:\n    gain: [1, 1]\n", "fundus.site_a.gain"),
        ("fundus:\n  site_a:\n    noise: -1\n", "fundus.site_a.noise"),
        ("retina:\n  site_a: {}\n", "retina: unknown task"),
        ("fundus: [1, 2]\n", "fundus: must be a non-empty mapping"),
    ],
)
def test_invalid_table_names_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    table = tmp_path / "sites.yaml"
    table.write_text(text)
    spec = PhantomSource(kind="phantom", path=Path("sites.yaml"), site="site_a")
    with pytest.raises(SourceError) as info:
        build_phantom(spec, DataConfig(), tmp_path, "clients.x.source")
    assert str(table) in str(info.value) and expected in str(info.value)


def test_missing_table_is_a_source_error(tmp_path: Path) -> None:
    spec = PhantomSource(kind="phantom", path=Path("nope.yaml"), site="site_a")
    with pytest.raises(SourceError, match="nope.yaml"):
        build_phantom(spec, DataConfig(), tmp_path, "clients.x.source")


# --------------------------------------------------------------------------------------------------
# fundus geometry and population
# --------------------------------------------------------------------------------------------------


def test_cup_inside_disc_inside_fov_and_disc_size() -> None:
    size = 64
    x, y = grid(size)
    r = np.sqrt(x * x + y * y)
    for image, masks, meta in fundus_batch():
        disc, cup = masks["optic_disc"], masks["optic_cup"]
        assert cup.any() and not (cup & ~disc).any()
        assert r[disc].max() < meta["fov_radius"]
        assert 0.12 <= meta["disc_diameter"] <= 0.18 * 1.1
        assert image[disc].mean() > image[~disc & (r < meta["fov_radius"] - 0.05)].mean() + 20
        assert image[r > meta["fov_radius"] + 3 * 2 / size].mean() < 12


def test_cup_disc_ratio_spread() -> None:
    vcdr = np.array([meta["cup_disc_ratio"] for _, _, meta in fundus_batch()])
    hcdr = np.array([meta["cup_disc_ratio_h"] for _, _, meta in fundus_batch()])
    assert vcdr.std() > 0.08 and vcdr.min() < 0.3 and vcdr.max() > 0.7
    assert 0.38 < vcdr.mean() < 0.52
    assert (hcdr <= vcdr + 1e-9).mean() > 0.95  # cups are vertically elongated
    measured = np.array([m["optic_cup"].any(1).sum() / m["optic_disc"].any(1).sum() for _, m, _ in fundus_batch()])
    assert np.corrcoef(measured, vcdr)[0, 1] > 0.8
    eyes = np.array([meta["eye"] for _, _, meta in fundus_batch()])
    assert 0.3 < eyes.mean() < 0.7


def _fundus_features(image: np.ndarray) -> np.ndarray:
    """(5,) mean R, G, B inside the field of view, mean |Laplacian| of green, field-of-view area (%)."""
    g = image.astype(np.float32)
    inside = binary_erosion(g.sum(-1) > 30, iterations=4)
    return np.array([*g[inside].mean(0), np.abs(laplace(g[..., 1]))[inside].mean(), 100 * inside.mean()])


def test_fundus_sites_differ() -> None:
    feats = {
        site: np.array([_fundus_features(render("fundus", site, i, 96)[0]) for i in range(10)])
        for site in FUNDUS_SITES
    }
    for a_i, a in enumerate(FUNDUS_SITES):
        for b in FUNDUS_SITES[a_i + 1 :]:
            fa, fb = feats[a], feats[b]
            pooled = np.sqrt(0.5 * (fa.var(0) + fb.var(0))) + 1e-6
            separation = np.abs(fa.mean(0) - fb.mean(0)) / pooled
            colour = np.linalg.norm(fa.mean(0)[:3] - fb.mean(0)[:3])
            assert separation.max() > 4.0, (a, b, separation)
            assert colour > 20.0, (a, b, colour)


# --------------------------------------------------------------------------------------------------
# skin
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("site", SKIN_SITES)
def test_skin_lesion_mask_and_contrast(site: str) -> None:
    darker = 0
    for i in range(25):
        image, masks, meta = render("skin", site, i)
        lesion = masks["lesion"]
        assert 0.01 < lesion.mean() < 0.6
        border = np.concatenate([lesion[0], lesion[-1], lesion[:, 0], lesion[:, -1]])
        assert border.mean() < 0.5
        assert meta["lesion_area"] == pytest.approx(lesion.mean())
        lum = image.astype(np.float32).mean(-1)
        ring = binary_erosion(~lesion, iterations=3) & ~binary_erosion(~lesion, iterations=12)
        darker += lum[binary_erosion(lesion, iterations=2)].mean() < lum[ring].mean() - 10
    assert darker >= 22


def test_skin_tones_vary_and_sites_shift_them() -> None:
    tones = {s: np.array([render("skin", s, i, 32)[2]["tone"] for i in range(40)]) for s in SKIN_SITES}
    assert tones["clinic_c"].std() > 0.12
    assert tones["clinic_b"].mean() > tones["clinic_a"].mean() + 0.25
    skin_lum = {}
    for s in ("clinic_a", "clinic_b"):
        values = []
        for i in range(10):
            image, masks, _ = render("skin", s, i, 64)
            x, y = grid(64)
            keep = ~masks["lesion"] & (np.sqrt(x * x + y * y) < 0.9)
            values.append(image[keep].mean())
        skin_lum[s] = np.mean(values)
    assert skin_lum["clinic_a"] > skin_lum["clinic_b"] + 30


def test_lesion_scale_scales_the_same_lesion() -> None:
    """lesion_scale multiplies the radius only: the same draws give the same outline, larger (1 renders as before)."""
    skin = load_site_table(TABLE)["skin"]
    assert all(isinstance(st, SkinStyle) and st.lesion_scale == 1.0 for st in skin.values())  # sites.yaml: as before
    style = skin["clinic_a"]
    assert isinstance(style, SkinStyle)
    ratios = []
    for i in range(12):
        base = render_skin(sample_rng(0, "clinic_a", i), 64, style)
        same = render_skin(sample_rng(0, "clinic_a", i), 64, style.model_copy(update={"lesion_scale": 1.0}))
        big = render_skin(sample_rng(0, "clinic_a", i), 64, style.model_copy(update={"lesion_scale": 1.4}))
        np.testing.assert_array_equal(base[0], same[0])
        small, large = base[1]["lesion"], big[1]["lesion"]
        assert not (small & ~large).any()
        ratios.append(large.sum() / small.sum())
        assert big[2]["tone"] == base[2]["tone"]  # every other draw is unchanged
    assert 1.6 < np.median(ratios) < 2.2  # area ~ 1.4 ** 2
    with pytest.raises(ValueError, match="lesion_scale"):
        style.model_validate({"lesion_scale": 3.0})


def test_samfed_sites_differ_in_acquisition_and_lesion_size() -> None:
    table = {site: style for site, style in load_site_table(SAMFED_TABLE)["skin"].items() if isinstance(style, SkinStyle)}
    assert list(table) == SAMFED_SITES
    stats = {}
    for site in SAMFED_SITES:
        areas, touching, scope, colour = [], [], [], []
        for i in range(30):
            image, masks, meta = render_skin(sample_rng(0, site, i), 64, table[site])
            lesion = masks["lesion"]
            areas.append(lesion.mean())
            touching.append(bool(np.concatenate([lesion[0], lesion[-1], lesion[:, 0], lesion[:, -1]]).any()))
            scope.append(meta["dermoscope"])
            keep = ~lesion & (image.astype(np.float32).sum(-1) > 30)
            colour.append(image[keep].mean(0))
        assert np.mean(touching) < 0.1, site  # lesions stay inside the picture
        stats[site] = (np.median(areas), np.mean(scope), np.mean(colour, axis=0))
    area = {s: v[0] for s, v in stats.items()}
    assert area["samfed_a"] > 1.6 * area["samfed_c"] and area["samfed_b"] < 0.7 * area["samfed_c"]
    assert area["samfed_a"] > area["samfed_d"] > area["samfed_c"]
    assert stats["samfed_b"][1] == 0.0 and stats["samfed_d"][1] == 1.0 and stats["samfed_a"][1] > 0.8
    private = SAMFED_SITES[1:]
    for i, a in enumerate(private):
        for b in private[i + 1 :]:
            assert np.linalg.norm(stats[a][2] - stats[b][2]) > 30, (a, b)


# --------------------------------------------------------------------------------------------------
# polyp (colonoscopy)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("site", ["center_a", "center_b", "public"])
def test_polyp_mask_inside_the_scope_and_sites_differ_in_size(site: str) -> None:
    areas = []
    for i in range(20):
        image, masks, meta = render("polyp", site, i, 64)
        polyp = masks["polyp"]
        x, y = grid(64)
        assert polyp.any() and not polyp[np.sqrt(x * x + y * y) > 1.2].any()  # inside the circular field
        assert meta["polyp_area"] == pytest.approx(polyp.mean())
        corners = image[:4, :4].astype(np.float32).mean()
        assert corners < 20  # black outside the endoscope's field
        areas.append(polyp.mean())
    assert 0.005 < np.median(areas) < 0.3


def test_polyp_sites_differ_and_the_source_reads_them() -> None:
    a = np.median([render("polyp", "center_a", i, 64)[1]["polyp"].mean() for i in range(30)])
    b = np.median([render("polyp", "center_b", i, 64)[1]["polyp"].mean() for i in range(30)])
    assert b > a * 1.3  # center_b sees larger polyps
    sample = source("center_a", task="polyp", classes=["polyp"]).load(source("center_a", task="polyp", classes=["polyp"]).items()[0])
    assert sample.mask.shape == (1, 48, 48) and sample.image.shape == (48, 48, 3)


def test_roi_view_is_a_disc_centred_crop() -> None:
    """view: roi crops the photograph around the disc: the disc fills far more of the image, near the centre."""
    spec = dict(kind="phantom", task="fundus", path=Path("data/phantom/sites.yaml"), site="site_b", n=40)
    cfg = DataConfig(image_size=64, mask_size=32)
    full = build_phantom(PhantomSource(**spec), cfg, REPO, "clients.x.source")
    roi = build_phantom(PhantomSource(**spec, view="roi", roi_zoom=3.0, roi_jitter=0.08), cfg, REPO, "clients.x.source")
    full_frac, roi_frac, offsets = [], [], []
    for item in roi.items():
        sample = roi.load(item)
        disc, cup = sample.mask
        assert sample.image.shape == (64, 64, 3) and disc.any() and np.all(cup <= disc)
        rows, cols = np.nonzero(disc)
        offsets.append(max(abs(rows.mean() - 31.5), abs(cols.mean() - 31.5)) / 64)
        roi_frac.append(disc.mean())
        full_frac.append(full.load(item).mask[0].mean())
    assert np.mean(roi_frac) > 6 * np.mean(full_frac)  # zoom 3 -> about 9x the area
    assert 0.08 < np.mean(roi_frac) < 0.35
    assert max(offsets) <= 0.08 + 0.02  # within the jitter (+ rounding / ellipse centroid)


def test_roi_view_needs_fundus() -> None:
    with pytest.raises(ValueError, match="view 'roi' is a disc-centred crop: task must be 'fundus'"):
        PhantomSource(kind="phantom", task="skin", path=Path("x.yaml"), site="clinic_a", view="roi")
