"""Quality metrics on hand-made images and nets: known values, invariances, symmetry, bounds, and the histogram
definition."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from atelier import metrics
from atelier.features.base import FeatureNet
from conftest import TinyNet, make_image


def flat(rgb, h=16, w=16):
    return torch.tensor(rgb, dtype=torch.float32).view(1, 3, 1, 1).expand(1, 3, h, w).contiguous()


class PointNet(FeatureNet):
    """A hand-made judge of 1x1 convs only: each position's features depend on that pixel alone, so moving pixels
    around moves their features with them. ``centred`` is the pixels minus 0.5 (signed, so unit vectors can point
    opposite ways); ``mixed`` is a seeded random 1x1 conv over its ReLU."""

    def __init__(self):
        super().__init__(identity="point:hand-made")
        centred = nn.Conv2d(3, 3, 1)
        mixed = nn.Conv2d(3, 8, 1)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            centred.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            centred.bias.fill_(-0.5)
            mixed.weight.copy_(torch.randn(mixed.weight.shape, generator=g))
            mixed.bias.copy_(torch.randn(mixed.bias.shape, generator=g))
        self.layers["centred"] = centred
        self.layers["relu"] = nn.ReLU()
        self.layers["mixed"] = mixed
        self.freeze()


LEVELS = ("centred", "mixed")


def test_identical_images_score_perfectly(tiny_net):
    x = make_image(32, 40, 1)
    assert float(metrics.style_distance(x, x, tiny_net)) == pytest.approx(0.0, abs=1e-6)
    assert float(metrics.style_meanstd_distance(x, x, tiny_net)) == pytest.approx(0.0, abs=1e-6)
    assert float(metrics.content_distance(x, x, tiny_net)) == pytest.approx(0.0, abs=1e-6)
    assert float(metrics.unit_feature_distance(x, x, tiny_net)) == pytest.approx(0.0, abs=1e-6)
    for name, d in metrics.judge_distances(x, x, x, tiny_net).items():
        assert float(d) == pytest.approx(0.0, abs=1e-6), name
    assert float(metrics.ssim(x, x)) == pytest.approx(1.0, abs=1e-9)
    assert float(metrics.colour_distance(x, x)) == pytest.approx(0.0, abs=1e-6)
    assert math.isinf(float(metrics.psnr(x, x)))


def test_different_images_score_above_zero(tiny_net):
    a, b = make_image(32, 40, 1), make_image(32, 40, 2)
    assert float(metrics.style_distance(a, b, tiny_net)) > 1e-4
    assert float(metrics.style_meanstd_distance(a, b, tiny_net)) > 1e-4
    assert float(metrics.content_distance(a, b, tiny_net)) > 1e-4
    assert float(metrics.unit_feature_distance(a, b, tiny_net)) > 1e-4
    assert float(metrics.ssim(a, b)) < 0.99
    assert float(metrics.colour_distance(a, b)) > 1e-3
    assert float(metrics.psnr(a, b)) < 40


def test_style_distances_take_images_of_different_sizes(tiny_net):
    # Gram matrices are normalised by C*H*W and means/stds are per position, so a style of another size is fine.
    for distance in (metrics.style_distance, metrics.style_meanstd_distance):
        d = distance(make_image(32, 40, 1), make_image(48, 24, 2), tiny_net)
        assert d.shape == (1,) and float(d) > 0


def test_a_spatial_permutation_keeps_style_statistics_and_moves_content():
    # Flipping the image flips a 1x1-conv net's features: the same multiset of feature vectors, in other places.
    net, x = PointNet(), make_image(24, 32, 7)
    d = metrics.judge_distances(x.flip(-1), x, x, net, style_layers=LEVELS, content_layers=LEVELS)
    assert float(d["style_gram"]) == pytest.approx(0.0, abs=1e-6)
    assert float(d["style_meanstd"]) == pytest.approx(0.0, abs=1e-6)
    assert float(d["content_unit"]) > 0.01


def test_mean_std_distance_matches_the_definition_by_hand():
    # At ``centred`` the features are the pixels minus 0.5: a constant shift moves every channel's mean by 0.1 and
    # leaves its std alone, so only the mean term is non-zero.
    net, x = PointNet(), make_image(24, 32, 8).clamp(0.0, 0.85)
    shifted = x + 0.1
    got = float(metrics.style_meanstd_distance(shifted, x, net, layers=["centred"]))
    f, t = (shifted.double() - 0.5).numpy()[0], (x.double() - 0.5).numpy()[0]
    mf, mt = f.mean((1, 2)), t.mean((1, 2))
    sf, st = f.std((1, 2)), t.std((1, 2))  # numpy's std is the population std, as in the metric
    expect = ((mf - mt) ** 2).sum() / ((mt ** 2).sum() + metrics.STAT_EPS) \
        + ((sf - st) ** 2).sum() / ((st ** 2).sum() + metrics.STAT_EPS)
    assert ((sf - st) ** 2).sum() < 1e-12 and got > 1e-3
    assert got == pytest.approx(expect, rel=1e-4)
    # A flat target has no spread at all: the distance stays finite.
    assert math.isfinite(float(metrics.style_meanstd_distance(x, flat([0.3, 0.4, 0.5]), net, layers=LEVELS)))


def test_unit_feature_distance_is_symmetric_bounded_and_blind_to_magnitude():
    net, a, b = PointNet(), make_image(24, 32, 9), make_image(24, 32, 10)
    ab = float(metrics.unit_feature_distance(a, b, net, layers=LEVELS))
    assert ab == pytest.approx(float(metrics.unit_feature_distance(b, a, net, layers=LEVELS)), abs=1e-9)
    assert 0.0 < ab <= 4.0
    # An inverted image has opposite centred features everywhere: the bound, 4, is reached.
    inverse = float(metrics.unit_feature_distance(a, 1.0 - a, net, layers=["centred"]))
    assert inverse == pytest.approx(4.0, abs=1e-4) and inverse <= 4.0 + 1e-6
    # Halving the contrast around 0.5 halves every centred feature vector but keeps its direction: distance 0.
    assert float(metrics.unit_feature_distance(a, 0.5 + 0.5 * (a - 0.5), net, layers=["centred"])) == \
        pytest.approx(0.0, abs=1e-6)


def test_judge_distances_equal_the_single_metrics(tiny_net):
    # One pass of the judge over the output for every level gives what the separate functions give.
    out = torch.cat([make_image(32, 40, 11), make_image(32, 40, 12)])
    content, style = make_image(32, 40, 13), make_image(40, 24, 14)
    d = metrics.judge_distances(out, content, style, tiny_net, style_layers=metrics.STYLE_LAYERS,
                                content_layers=("conv3_1", "conv4_2"))
    assert d["style_gram"].shape == d["style_meanstd"].shape == d["content_unit"].shape == (2,)
    torch.testing.assert_close(d["style_gram"], metrics.style_distance(out, style, tiny_net))
    torch.testing.assert_close(d["style_meanstd"], metrics.style_meanstd_distance(out, style, tiny_net))
    torch.testing.assert_close(d["content_unit"], metrics.unit_feature_distance(out, content, tiny_net,
                                                                               layers=("conv3_1", "conv4_2")))


def test_psnr_known_values():
    a = make_image(20, 24, 3).clamp(0.0, 0.85)
    # A uniform difference of 0.1: MSE = 0.01, PSNR = 10 log10(1 / 0.01) = 20 dB exactly.
    assert float(metrics.psnr(a, a + 0.1)) == pytest.approx(20.0, abs=1e-4)
    # 0.01 -> MSE 1e-4 -> 40 dB; a range of 255 with a difference of 25.5 is 20 dB again.
    assert float(metrics.psnr(a, a - 0.01)) == pytest.approx(40.0, abs=1e-3)
    assert float(metrics.psnr(a * 255, a * 255 + 25.5, data_range=255.0)) == pytest.approx(20.0, abs=1e-4)


def test_metrics_are_per_image_over_a_batch():
    a = torch.cat([make_image(16, 16, 1), make_image(16, 16, 2)])
    b = torch.cat([make_image(16, 16, 1), make_image(16, 16, 3)])
    p = metrics.psnr(a, b)
    s = metrics.ssim(a, b)
    assert p.shape == s.shape == (2,)
    assert math.isinf(float(p[0])) and math.isfinite(float(p[1]))
    assert float(s[0]) == pytest.approx(1.0) and float(s[1]) < 1.0


def test_ssim_of_an_image_and_its_inversion_is_low():
    x = make_image(32, 32, 4)
    assert float(metrics.ssim(x, 1.0 - x)) < 0.2


def test_hellinger_is_symmetric_and_bounded():
    a, b = make_image(24, 24, 5), make_image(24, 24, 6)
    ab, ba = float(metrics.colour_distance(a, b)), float(metrics.colour_distance(b, a))
    assert ab == pytest.approx(ba, abs=1e-9)
    assert 0.0 < ab <= 1.0
    # Reddish vs bluish flat images share no histogram bins: the distance is close to its maximum, 1.
    far = float(metrics.colour_distance(flat([0.8, 0.2, 0.2]), flat([0.2, 0.2, 0.8])))
    assert 0.9 < far <= 1.0


def test_rgb_uv_histogram_matches_the_definition_by_hand():
    img = torch.tensor([[0.6, 0.3], [0.2, 0.5], [0.1, 0.4]], dtype=torch.float32).view(1, 3, 1, 2)
    h = metrics.rgb_uv_histogram(img)
    assert h.shape == (1, 3, 64, 64)
    assert float(h.sum()) == pytest.approx(1.0, abs=1e-5)
    # Independent numpy evaluation of HistoGAN's Eq. 1-2 for this two-pixel image.
    eps, sigma = 1e-6, 0.02
    centres = np.linspace(-3, 3, 64)
    px = img.double().numpy().reshape(3, -1)
    expect = np.zeros((3, 64, 64))
    for r, g, b in px.T:
        rgb = [r, g, b]
        iy = math.sqrt(r * r + g * g + b * b + eps)
        for c, (c1, c2) in enumerate(((1, 2), (0, 2), (0, 1))):
            u = math.log(rgb[c] + eps) - math.log(rgb[c1] + eps)
            v = math.log(rgb[c] + eps) - math.log(rgb[c2] + eps)
            ku = 1 / (1 + ((u - centres) / sigma) ** 2)
            kv = 1 / (1 + ((v - centres) / sigma) ** 2)
            expect[c] += iy * np.outer(ku, kv)
    expect /= expect.sum()
    np.testing.assert_allclose(h[0].double().numpy(), expect, atol=1e-6)


def test_bad_shapes_are_refused(tiny_net):
    with pytest.raises(ValueError):
        metrics.psnr(make_image(16, 16), make_image(16, 20))
    with pytest.raises(ValueError):
        metrics.ssim(torch.rand(3, 16, 16), torch.rand(3, 16, 16))
    with pytest.raises(ValueError):
        metrics.content_distance(make_image(16, 16), make_image(20, 16), TinyNet())
    with pytest.raises(ValueError):
        metrics.unit_feature_distance(make_image(16, 16), make_image(20, 16), TinyNet())
    with pytest.raises(ValueError):  # content must match the output's size; the style need not
        metrics.judge_distances(make_image(16, 16), make_image(20, 16), make_image(16, 16), TinyNet())
