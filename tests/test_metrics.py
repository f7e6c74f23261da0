"""Quality metrics on hand-made images: known values, symmetry, bounds, and the histogram definition."""

import math

import numpy as np
import pytest
import torch

from atelier import metrics
from conftest import TinyNet, make_image


def flat(rgb, h=16, w=16):
    return torch.tensor(rgb, dtype=torch.float32).view(1, 3, 1, 1).expand(1, 3, h, w).contiguous()


def test_identical_images_score_perfectly(tiny_net):
    x = make_image(32, 40, 1)
    assert float(metrics.style_distance(x, x, tiny_net)) == pytest.approx(0.0, abs=1e-6)
    assert float(metrics.content_distance(x, x, tiny_net)) == pytest.approx(0.0, abs=1e-6)
    assert float(metrics.ssim(x, x)) == pytest.approx(1.0, abs=1e-9)
    assert float(metrics.colour_distance(x, x)) == pytest.approx(0.0, abs=1e-6)
    assert math.isinf(float(metrics.psnr(x, x)))


def test_different_images_score_above_zero(tiny_net):
    a, b = make_image(32, 40, 1), make_image(32, 40, 2)
    assert float(metrics.style_distance(a, b, tiny_net)) > 1e-4
    assert float(metrics.content_distance(a, b, tiny_net)) > 1e-4
    assert float(metrics.ssim(a, b)) < 0.99
    assert float(metrics.colour_distance(a, b)) > 1e-3
    assert float(metrics.psnr(a, b)) < 40


def test_style_distance_takes_images_of_different_sizes(tiny_net):
    # Gram matrices are normalised by C*H*W, so a style image of another size is fine.
    d = metrics.style_distance(make_image(32, 40, 1), make_image(48, 24, 2), tiny_net)
    assert d.shape == (1,) and float(d) > 0


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
