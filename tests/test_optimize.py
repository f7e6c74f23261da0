"""The optimisation engine on a tiny seeded net: fast, deterministic, and net-agnostic."""

import pytest
import torch

from atelier import colour
from atelier.options import StylizeOptions
from atelier.errors import AtelierError
from atelier.methods.optimize import optimize
from conftest import make_image


def run(net, content, styles, **kw):
    kw.setdefault("scales", "none")
    kw.setdefault("size", max(content.shape[-2:]))
    kw.setdefault("iterations", 12)
    return optimize(net, content, styles, StylizeOptions(**kw))


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_loss_decreases_and_evaluations_counted(tiny_net, optimizer):
    content, style = make_image(32, 48, 1), make_image(40, 40, 2)
    res = run(tiny_net, content, [style], optimizer=optimizer, iterations=20, learning_rate=0.05)
    losses = [h["loss"] for h in res.history]
    assert res.evaluations == 20 == len(losses)
    assert res.optimizer_steps == 20
    assert losses[-1] < 0.7 * losses[0]
    assert res.image.shape == content.shape
    assert 0.0 <= res.image.min() and res.image.max() <= 1.0


def test_same_seed_same_image_other_seed_differs(tiny_net):
    content, style = make_image(24, 24, 1), make_image(24, 24, 2)
    a = run(tiny_net, content, [style], init="random", seed=3).image
    b = run(tiny_net, content, [style], init="random", seed=3).image
    c = run(tiny_net, content, [style], init="random", seed=4).image
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_multi_style_blend(tiny_net):
    content, s1, s2 = make_image(24, 24, 1), make_image(24, 24, 2), make_image(24, 24, 3)
    only_first = run(tiny_net, content, [s1]).image
    blend_first = run(tiny_net, content, [s1, s2], style_weights=(1.0, 0.0)).image
    half = run(tiny_net, content, [s1, s2], style_weights=(0.5, 0.5)).image
    assert torch.allclose(only_first, blend_first, atol=1e-5)  # a zero weight removes that style entirely
    assert not torch.allclose(only_first, half, atol=1e-3)
    with pytest.raises(AtelierError, match="one weight per"):
        run(tiny_net, content, [s1, s2], style_weights=(1.0,))


def test_luminance_keeps_content_chroma(tiny_net):
    content = make_image(32, 32, 1)
    style = make_image(32, 32, 5) * torch.tensor([1.0, 0.2, 0.2]).view(1, 3, 1, 1)  # a red style
    plain = run(tiny_net, content, [style], style_weight=1000.0, iterations=15).image
    kept = run(tiny_net, content, [style], style_weight=1000.0, iterations=15, preserve_color="luminance").image
    chroma = lambda t: colour.rgb_to_ycbcr(t)[:, 1:]
    # Where no channel clipped, the chroma is exactly the content's; measure the mean difference in YCbCr.
    assert (chroma(kept) - chroma(content)).abs().mean() < 0.01
    assert (chroma(plain) - chroma(content)).abs().mean() > 2 * (chroma(kept) - chroma(content)).abs().mean()
    # ... while the luma did change.
    assert (colour.luminance(kept) - colour.luminance(content)).abs().mean() > 1e-3


def test_histogram_mode_runs_and_differs(tiny_net):
    content, style = make_image(24, 24, 1), make_image(24, 24, 6)
    a = run(tiny_net, content, [style]).image
    b = run(tiny_net, content, [style], preserve_color="histogram").image
    assert a.shape == b.shape and not torch.allclose(a, b)


def test_multiscale_sizes_and_output(tiny_net):
    content, style = make_image(60, 90, 1), make_image(50, 50, 2)
    res = optimize(tiny_net, content, [style], StylizeOptions(size=90, scales="30,60", iterations=4))
    assert res.scale_sizes == [(20, 30), (40, 60), (60, 90)]
    assert res.image.shape == (1, 3, 60, 90)
    assert res.evaluations == 12
    assert [h["scale"] for h in res.history] == [0] * 4 + [1] * 4 + [2] * 4


def test_unknown_layer_lists_valid(tiny_net):
    with pytest.raises(AtelierError, match="conv1_1"):
        run(tiny_net, make_image(), [make_image()], content_layers=("conv9_9",))


def test_callback_gets_images_every_n(tiny_net):
    seen = []
    optimize(tiny_net, make_image(), [make_image(seed=2)],
             StylizeOptions(size=48, scales="none", iterations=6, save_every=2), callback=seen.append)
    assert [i.step for i in seen] == [1, 2, 3, 4, 5, 6]
    with_images = [i.evaluations for i in seen if i.image is not None]
    assert with_images == [2, 4, 6]
    assert set(seen[0].parts) == {"content", "style", "tv"}


def test_init_from_path(tiny_net, tmp_path):
    from atelier.images import save_image

    start = make_image(16, 16, 9)
    save_image(start, tmp_path / "start.png")
    res = run(tiny_net, make_image(32, 32), [make_image(seed=2)], init=str(tmp_path / "start.png"), iterations=1)
    assert res.image.shape == (1, 3, 32, 32)


def test_loss_balance_holds_across_sizes(tiny_net):
    """Relative losses do not scale with the pixel count: the same pair at 2x and 4x the size keeps its balance."""
    from atelier.losses import content_loss, gram, style_loss, tv_loss
    from atelier.images import resize_long_side

    content, style = make_image(256, 256, 1), make_image(256, 256, 2)
    layers = ["conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"]
    ratios = []
    for size in (64, 128, 256):
        c, s = resize_long_side(content, size), resize_long_side(style, size)
        noisy = (c + 0.05 * torch.randn(c.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
        fc, fs, fn = tiny_net(c, layers + ["conv4_2"]), tiny_net(s, layers), tiny_net(noisy, layers + ["conv4_2"])
        style_term = sum(style_loss(fc[n], gram(fs[n])) for n in layers) / len(layers)
        content_term = content_loss(fn["conv4_2"], fc["conv4_2"])
        ratios.append(float(style_term / content_term))
    assert max(ratios) / min(ratios) < 3.0, ratios


def test_lbfgs_history_bounds_the_optimiser_state(tiny_net, monkeypatch):
    content, style = make_image(24, 24, 1), make_image(24, 24, 2)
    kept = []
    real_step = torch.optim.LBFGS.step

    def step(self, closure):
        out = real_step(self, closure)
        kept.append(len(self.state[self._params[0]].get("old_dirs", [])))
        return out

    monkeypatch.setattr(torch.optim.LBFGS, "step", step)
    run(tiny_net, content, [style], iterations=12, lbfgs_history=3)
    assert max(kept) == 3  # never more curvature pairs than asked for
    with pytest.raises(AtelierError, match="lbfgs_history"):
        StylizeOptions(lbfgs_history=0).validate()


def test_a_picture_too_small_for_vggs_pools_gets_one_line(tmp_path):
    # A 1x1 photo used to end in a RuntimeError traceback from VGG19's pooling (issue 12, defect 1).
    import atelier
    from atelier.errors import AtelierError

    with pytest.raises(AtelierError, match="needs at least 16 px"):
        atelier.stylize(torch.rand(1, 3, 1, 1), torch.rand(1, 3, 8, 8), method="gatys", vgg_weights="random",
                        size=1, iterations=1, scales="none")
    for method in ("lite", "effnet"):  # their nets run on any size
        r = atelier.stylize(torch.rand(1, 3, 1, 1), torch.rand(1, 3, 8, 8), method=method, size=1, iterations=1,
                            scales="none")
        assert r.tensor.shape == (1, 3, 1, 1)
