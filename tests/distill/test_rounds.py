"""A distillation round with two small real segmenters: pool refresh, mutual vs teacher-only, KL falls."""

from __future__ import annotations

import pytest
import torch

from dsfed.distill.rounds import DistillSettings, distill_round, score_samples
from dsfed.models import build_model


def _models() -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    sam = build_model("unet", num_classes=2, output_size=16, input_size=32)
    torch.manual_seed(1)
    tiny = build_model("unet", num_classes=2, output_size=16, input_size=32)
    return sam, tiny


def _data(n: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=gen, dtype=torch.uint8)
    masks = (torch.rand(n, 2, 16, 16, generator=gen) > 0.7).to(torch.uint8)
    return images, masks


def test_pool_is_sized_by_rate_and_refreshed_each_round() -> None:
    sam, tiny = _models()
    images, masks = _data()
    settings = DistillSettings(rate=0.5, batch_size=4, tau=100.0)  # near-uniform draws
    opt = torch.optim.Adam(tiny.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    pools = [distill_round(sam, tiny, None, opt, images, masks, settings, gen).pool for _ in range(3)]
    assert all(len(p) == 6 and len(set(p.tolist())) == 6 for p in pools)
    assert len({tuple(sorted(p.tolist())) for p in pools}) > 1
    every = distill_round(sam, tiny, None, opt, images, masks, DistillSettings(selection="all"), gen)
    assert sorted(every.pool.tolist()) == list(range(12)) and every.scores.shape == (12,)


def test_teacher_only_leaves_sam_unchanged() -> None:
    sam, tiny = _models()
    images, masks = _data()
    before = {k: v.clone() for k, v in sam.state_dict().items()}
    opt_s, opt_t = torch.optim.Adam(sam.parameters(), lr=1e-2), torch.optim.Adam(tiny.parameters(), lr=1e-2)
    settings = DistillSettings(mutual=False, w_gt=0.0, selection="all")
    distill_round(sam, tiny, opt_s, opt_t, images, masks, settings, torch.Generator().manual_seed(0))
    after = sam.state_dict()
    weights = [k for k in before if before[k].is_floating_point() and "running" not in k]
    assert all(torch.equal(before[k], after[k]) for k in weights)


@pytest.mark.parametrize("selection", ["pool", "batch_topk", "all"])
def test_kl_only_rounds_bring_the_models_together(selection: str) -> None:
    sam, tiny = _models()
    images, masks = _data()
    settings = DistillSettings(w_gt=0.0, selection=selection, rate=0.75, batch_size=4)
    opt_s, opt_t = torch.optim.Adam(sam.parameters(), lr=3e-3), torch.optim.Adam(tiny.parameters(), lr=3e-3)
    start = score_samples(sam, tiny, images, masks, settings, torch.device("cpu"))["sym_kl"].mean()
    gen = torch.Generator().manual_seed(0)
    for _ in range(4):
        result = distill_round(sam, tiny, opt_s, opt_t, images, masks, settings, gen)
    end = score_samples(sam, tiny, images, masks, settings, torch.device("cpu"))["sym_kl"].mean()
    assert end < 0.5 * start and {"total", "gt_sam", "kl_sam_tiny"} <= result.losses.keys()


def test_a_frozen_encoder_is_run_once_and_the_rounds_match_the_uncached_ones() -> None:
    """SAM's encoder frozen: ``run_distillation`` embeds every image once; scores and weights are those of
    rounds that run the encoder in every batch (to float rounding). SGD, not Adam: Adam scales each step by
    the gradient's own size, so a bias ahead of a norm layer (gradient zero in exact arithmetic, float noise
    here) moves by a full learning rate in a direction the noise picks, and the comparison would be about
    the noise (0.0006 apart on one machine, equal on another)."""
    from dsfed.distill.rounds import frozen_encoder
    from dsfed.distill.run import run_distillation
    from dsfed.server.finetune import freeze_image_encoder

    images, masks = _data()
    settings = DistillSettings(rate=0.5, batch_size=4)
    runs = {}
    for cache in (True, False):
        torch.manual_seed(0)
        sam = build_model("sam_demo", num_classes=2, output_size=16, input_size=32)
        torch.manual_seed(1)
        tiny = build_model("unet", num_classes=2, output_size=16, input_size=32)
        assert not frozen_encoder(sam) and freeze_image_encoder(sam) > 0 and frozen_encoder(sam)
        calls = []
        sam.sam.image_encoder.register_forward_hook(lambda module, args, out: calls.append(len(out)))
        start = {k: v.clone() for k, v in tiny.state_dict().items()}
        opt_s = torch.optim.SGD([p for p in sam.parameters() if p.requires_grad], lr=1e-2)
        opt_t = torch.optim.SGD(tiny.parameters(), lr=1e-2)
        history = run_distillation(sam, tiny, opt_s, opt_t, images, masks, settings, rounds=2, cache_embeddings=cache)
        runs[cache] = (history, calls, sam.state_dict(), tiny.state_dict())
        assert max((tiny.state_dict()[k].float() - v.float()).abs().max().item() for k, v in start.items()) > 1e-3
    (cached, calls, sam_c, tiny_c), (plain, plain_calls, sam_p, tiny_p) = runs[True], runs[False]
    assert sum(calls) == len(images) and sum(plain_calls) == 2 * (len(images) + len(images) // 2)   # once, vs score + pool per round
    for a, b in zip(cached, plain):
        assert a["pool_size"] == b["pool_size"] and abs(a["score_mean"] - b["score_mean"]) < 1e-5 and abs(a["total"] - b["total"]) < 1e-5
    for coded, reference in ((sam_c, sam_p), (tiny_c, tiny_p)):
        assert all(torch.allclose(coded[k].float(), v.float(), atol=1e-5) for k, v in reference.items())
