import math

import pytest
import torch

from atelier import colour
from atelier.losses import blend_grams, content_loss, gram, style_loss, tv_loss


def test_gram_hand_computed():
    # Two channels over a 1x2 image: F = [[1, 2], [3, 4]] -> F F^T = [[5, 11], [11, 25]], / (C*H*W = 4).
    f = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]]]])
    assert torch.allclose(gram(f), torch.tensor([[[5.0, 11.0], [11.0, 25.0]]]) / 4)


def test_gram_is_size_invariant_for_repeated_statistics():
    f = torch.rand(1, 4, 8, 8)
    tiled = f.repeat(1, 1, 2, 2)  # same statistics, four times the pixels
    assert torch.allclose(gram(f), gram(tiled), atol=1e-6)


def test_content_loss_relative():
    t = torch.tensor([[[[3.0, 4.0]]]])
    assert content_loss(t, t).item() == 0.0
    assert content_loss(torch.zeros_like(t), t).item() == pytest.approx(1.0)
    # |(3,4)-(0,4)|^2 / |(3,4)|^2 = 9/25
    assert content_loss(torch.tensor([[[[0.0, 4.0]]]]), t).item() == pytest.approx(9 / 25)


def test_style_loss_zero_on_target_and_positive_elsewhere():
    f = torch.rand(1, 3, 5, 5)
    assert style_loss(f, gram(f)).item() == pytest.approx(0.0, abs=1e-10)
    assert style_loss(f * 2, gram(f)).item() == pytest.approx(9.0, rel=1e-5)  # gram scales by 4: (4-1)^2


def test_tv_hand_computed():
    img = torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]])  # horizontal steps of 1, no vertical change
    assert tv_loss(img).item() == pytest.approx(1.0)
    assert tv_loss(torch.ones(1, 3, 4, 4)).item() == 0.0
    assert tv_loss(torch.zeros(1, 3, 1, 1)).item() == 0.0


def test_blend_grams_weights_normalised():
    a, b = {"x": torch.ones(1, 2, 2)}, {"x": torch.zeros(1, 2, 2)}
    assert torch.allclose(blend_grams([a, b], [3, 1])["x"], torch.full((1, 2, 2), 0.75))


def test_ycbcr_round_trip_and_gray_has_neutral_chroma():
    x = torch.rand(2, 3, 6, 7)
    assert torch.allclose(colour.ycbcr_to_rgb(colour.rgb_to_ycbcr(x)), x, atol=1e-5)
    gray = torch.full((1, 3, 2, 2), 0.3)
    ycc = colour.rgb_to_ycbcr(gray)
    assert torch.allclose(ycc[:, 0], torch.full((1, 2, 2), 0.3), atol=1e-6)
    assert torch.allclose(ycc[:, 1:], torch.full((1, 2, 2, 2), 0.5), atol=1e-6)


def test_match_colour_matches_mean_and_covariance():
    g = torch.Generator().manual_seed(0)
    src = torch.rand(1, 3, 20, 20, generator=g) * 0.3 + 0.1
    ref = torch.rand(1, 3, 20, 20, generator=g) * 0.2 + torch.tensor([0.6, 0.3, 0.4]).view(1, 3, 1, 1)
    out = colour.match_colour(src, ref)

    def stats(t):
        px = t.double().reshape(3, -1)
        return px.mean(1), torch.cov(px)

    (mo, co), (mr, cr) = stats(out), stats(ref)
    assert torch.allclose(mo, mr, atol=2e-3)
    assert torch.allclose(co, cr, atol=2e-3)
    assert not math.isclose(float(stats(src)[0][0]), float(mr[0]), abs_tol=0.05)
