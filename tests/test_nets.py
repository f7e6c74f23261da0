"""Generators and discriminator: shapes at odd sizes, [0,1] range, gradients, rebuild from arch, determinism,
the tiny net's size and cost budget, the PatchGAN's receptive field, errors, and export-unfriendly modules."""

from __future__ import annotations

import copy
import json
import re

import pytest
import torch
from torch import nn

from atelier.errors import AtelierError
from atelier import registry
from atelier.nets import build_discriminator, build_generator, count_macs, discriminator_arch, generator_arch
from atelier.nets.blocks import norm, pad_to

SIZES = [(1, 1), (20, 36), (33, 47), (5, 70)]
TINY_MAX_MACS_512 = 1.0e9  # tiny's budget at 512x512 (it needs about 0.79 G); the hard ceiling asked for is 2 G


def first_conv(model: nn.Module) -> nn.Conv2d:
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


@pytest.fixture(scope="module")
def generators() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {name: build_generator(name) for name in registry.names("generator")}


@pytest.mark.parametrize("name", registry.names("generator"))
def test_shape_and_range_at_odd_sizes(generators, name):
    model = generators[name]
    g = torch.Generator().manual_seed(1)
    for h, w in SIZES:
        x = torch.rand(2, 3, h, w, generator=g)
        with torch.no_grad():
            y = model(x)
        assert y.shape == x.shape, (name, h, w)
        assert y.dtype == torch.float32
        assert torch.isfinite(y).all() and y.min() >= 0 and y.max() <= 1


@pytest.mark.parametrize("name", registry.names("generator"))
def test_gradients_reach_first_conv(generators, name):
    model = copy.deepcopy(generators[name]).train()
    x = torch.rand(1, 3, 20, 36, generator=torch.Generator().manual_seed(2))
    model(x).square().mean().backward()
    grad = first_conv(model).weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("name", registry.names("generator"))
def test_rebuild_from_arch(generators, name):
    model = generators[name]
    arch = json.loads(json.dumps(generator_arch(model)))  # must survive config.json
    rebuilt = build_generator(name, arch)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    rebuilt.load_state_dict(model.state_dict())


@pytest.mark.parametrize("name, arch", [("unet", {"base": 8, "depth": 4, "dropout": 0.5}),
                                        ("resnet", {"base": 8, "blocks": 2}),
                                        ("transformer", {"dim": 32, "heads": 2, "depth": 1, "patch": 4}),
                                        ("tiny", {"base": 8, "width": 24, "blocks": 1})])
def test_non_default_arch_round_trip(name, arch):
    model = build_generator(name, arch).eval()
    assert generator_arch(model) == {**generator_arch(build_generator(name)), **arch}
    rebuilt = build_generator(name, generator_arch(model))
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    x = torch.rand(1, 3, 33, 47)
    with torch.no_grad():
        assert model(x).shape == x.shape


@pytest.mark.parametrize("name", registry.names("generator"))
def test_deterministic_under_seed(name):
    torch.manual_seed(123)
    a = build_generator(name)
    torch.manual_seed(123)
    b = build_generator(name)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    x = torch.rand(1, 3, 20, 36)
    with torch.no_grad():
        assert torch.equal(a.eval()(x), b.eval()(x))


def test_tiny_budget():
    torch.manual_seed(0)
    model = build_generator("tiny").eval()
    params = sum(p.numel() for p in model.parameters())
    assert params * 4 <= 2 * 1024 * 1024 and params <= 500_000
    assert count_macs(model, torch.rand(1, 3, 512, 512)) <= TINY_MAX_MACS_512


def test_count_macs_matches_hand_count():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Flatten(1),
                        nn.Linear(8 * 4 * 4, 5))
    expected = 16 * 8 * 3 * 9 + 16 * 8 * 1 * 9 + 5 * 128
    assert count_macs(net, torch.rand(1, 3, 4, 4)) == expected
    assert not net[0]._forward_hooks  # hooks removed


def test_norm_is_instance_norm():
    x = torch.randn(2, 8, 5, 7)
    assert torch.allclose(norm(8)(x), nn.InstanceNorm2d(8, affine=True)(x), atol=1e-5)


def test_pad_to_centres_and_falls_back_to_replicate():
    x = torch.rand(1, 3, 5, 6)
    y, top, left = pad_to(x, 4)
    assert y.shape[-2:] == (8, 8) and (top, left) == (1, 1)
    assert torch.equal(y[:, :, top:top + 5, left:left + 6], x)
    y, top, left = pad_to(torch.rand(1, 3, 1, 2), 8)  # too small to reflect
    assert y.shape[-2:] == (8, 8)
    y, top, left = pad_to(x, 1)
    assert torch.equal(y, x) and (top, left) == (0, 0)


def test_discriminator_shapes_and_arch():
    torch.manual_seed(0)
    d = build_discriminator()
    assert discriminator_arch(d) == {"in_channels": 6, "base": 64, "n_layers": 3, "scales": 1}
    with torch.no_grad():
        assert d(torch.rand(2, 6, 64, 64)).shape == (2, 1, 6, 6)
        assert d(torch.rand(1, 6, 70, 70)).shape == (1, 1, 6, 6)
    rebuilt = build_discriminator(json.loads(json.dumps(discriminator_arch(d))))
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in d.state_dict().items()}
    small = build_discriminator({"in_channels": 3, "base": 8, "n_layers": 2})
    assert small(torch.rand(1, 3, 40, 40)).shape[:2] == (1, 1)


def test_discriminator_receptive_field_is_70px():
    torch.manual_seed(0)
    d = build_discriminator({"base": 8})
    # The instance norms let every pixel nudge every logit through the image statistics; the 70x70 window is a
    # property of the convs, so check it with the norms taken out.
    for i, layer in enumerate(d.net):
        if isinstance(layer, nn.GroupNorm):
            d.net[i] = nn.Identity()
    x = torch.rand(1, 6, 70, 70)
    x2 = x.clone()
    x2[:, :, 0, 0] = 1.0 - x2[:, :, 0, 0]
    with torch.no_grad():
        a, b = d(x), d(x2)
    assert a.shape == (1, 1, 6, 6)
    assert not torch.equal(a[..., 0, 0], b[..., 0, 0])
    assert torch.equal(a[..., -1, -1], b[..., -1, -1])
    # The window of one logit spans at most 70 pixels each way.
    x = torch.rand(1, 6, 128, 128, requires_grad=True)
    d(x)[0, 0, 7, 7].backward()
    rows = x.grad.abs().sum(dim=(0, 1, 3)).nonzero()
    cols = x.grad.abs().sum(dim=(0, 1, 2)).nonzero()
    assert rows.max() - rows.min() + 1 <= 70 and cols.max() - cols.min() + 1 <= 70


def one_line_error(fn, *patterns: str) -> str:
    with pytest.raises(AtelierError) as info:
        fn()
    message = str(info.value)
    assert "\n" not in message
    for pattern in patterns:
        assert re.search(pattern, message), (pattern, message)
    return message


def test_bad_names_and_arguments():
    one_line_error(lambda: build_generator("nope"), "nope", "unet", "resnet", "transformer", "tiny")
    one_line_error(lambda: build_generator("unet", {"bogus": 1}), "bogus", "base", "depth", "dropout")
    one_line_error(lambda: build_generator("unet", {"base": 0}), "base")
    one_line_error(lambda: build_generator("unet", {"base": "32"}), "base")
    one_line_error(lambda: build_generator("unet", {"base": True}), "base")
    one_line_error(lambda: build_generator("unet", {"dropout": 1.5}), "dropout")
    one_line_error(lambda: build_generator("resnet", {"blocks": -1}), "blocks")
    one_line_error(lambda: build_generator("transformer", {"dim": 30, "heads": 4}), "divisible")
    one_line_error(lambda: build_generator("transformer", {"patch": 3}), "patch", "8")
    one_line_error(lambda: build_generator("tiny", ["base"]), "mapping")
    one_line_error(lambda: build_discriminator({"n_layers": 0}), "n_layers")
    one_line_error(lambda: build_discriminator({"depth": 3}), "depth", "in_channels")
    one_line_error(lambda: build_discriminator()(torch.rand(1, 6, 16, 16)), "at least 24")
    assert build_generator("unet", {"dropout": 0}).arch["dropout"] == 0.0  # ints accepted where floats are


def test_only_export_friendly_modules():
    banned = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.MultiheadAttention)
    nets = [build_generator(name) for name in registry.names("generator")] + [build_discriminator()]
    for net in nets:
        for module in net.modules():
            assert not isinstance(module, banned), type(module).__name__
            assert not type(module).__name__.startswith("Adaptive"), type(module).__name__
