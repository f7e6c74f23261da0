"""Contract tests, looped over the registry: every registered feature net, method, generator and teacher meets its
contract. A new entry is tested by registering it. The last tests register a toy feature net, an optimisation method
over it and a toy one-pass method, and drive them through the CLI: the next engine is one module plus one
registration."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from atelier import api, registry
from atelier.cli import main
from atelier.errors import AtelierError, OptionError
from atelier.features.base import FeatureNet
from atelier.images import read_metadata, save_image
from atelier.methods import find
from atelier.methods.base import KINDS, all_options
from atelier.methods.optimize import OptimizeMethod
from atelier.options import GENERATORS, TEACHERS, StylizeOptions

from conftest import ToyColour, make_image

# The cheapest run of each kind: sizes and iterations small; nets with weights options take seeded random weights
# where that is faster than reading them (VGG19 is not on this machine at all).
FAST = {"size": 32, "iterations": 2, "scales": "none"}
RANDOM_WEIGHTS = {"vgg_weights": "random", "magenta_weights": "random"}


# ------------------------------------------------------------------------------------------------- feature nets


@pytest.mark.parametrize("name", registry.names("feature_net"))
def test_feature_net_contract(name):
    net = registry.create("feature_net", name, weights="random", pooling="max", device=torch.device("cpu"))
    assert isinstance(net, FeatureNet) and net.is_random and "random" in net.identity
    assert not net.training and not any(p.requires_grad for p in net.parameters())  # frozen
    levels = net.layer_names
    defaults = type(net).defaults()
    assert set(defaults["content_layers"]) | set(defaults["style_layers"]) <= set(levels)  # named levels
    x = make_image(max(32, net.min_side), max(48, net.min_side))
    out = net(x, [levels[0], defaults["content_layers"][0]])
    assert list(out) == [levels[0], defaults["content_layers"][0]] and all(v.dim() == 4 for v in out.values())

    # Truncation: the first level runs fewer modules than the deepest.
    def modules_run(level: str) -> int:
        calls: list[int] = []
        hooks = [m.register_forward_hook(lambda *_: calls.append(1)) for m in net.modules() if not list(m.children())]
        try:
            net(x, [level])
        finally:
            for h in hooks:
                h.remove()
        return len(calls)

    assert 0 < modules_run(levels[0]) < modules_run(levels[-1])
    with pytest.raises(AtelierError, match="choose from"):
        net(x, ["no_such_level"])


# ------------------------------------------------------------------------------------------------------ methods


def _method_options(m) -> dict:
    options = {k: v for k, v in {**FAST, **RANDOM_WEIGHTS}.items() if k in m.options}
    return options


@pytest.mark.parametrize("name", registry.names("method"))
def test_method_contract(name):
    m = find(name)
    assert m.kind in KINDS and m.description and m.style in ("required", "baked", "named")
    assert set(m.options) <= all_options() and {"size", "device", "max_pixels"} <= set(m.options)
    ok, reason = m.availability()
    assert isinstance(ok, bool) and isinstance(reason, str)
    styles = [make_image(24, 24, 7)] if m.style == "required" else m.style_names[:1] if m.style == "named" else []
    r = api.stylize(make_image(40, 60, 1), styles or None, name, **_method_options(m))
    assert r.tensor.shape == (1, 3, 21, 32) and 0 <= float(r.tensor.min()) <= float(r.tensor.max()) <= 1
    md = r.metadata
    assert md["method"] == m.name and isinstance(md["weights"], str) and md["weights"]
    assert isinstance(md["random_weights"], bool) and md["size"] == [21, 32]
    # Same options, same picture.
    again = api.stylize(make_image(40, 60, 1), styles or None, name, **_method_options(m))
    assert torch.equal(again.tensor, r.tensor)


@pytest.mark.parametrize("name", registry.names("method"))
def test_method_refuses_what_it_does_not_read(name):
    m = find(name)
    unread = sorted(all_options() - set(m.options))
    assert unread, f"{name} reads every option, even other nets' weights"
    with pytest.raises(OptionError, match=f"^{unread[0]} does not apply to {m.kind} method"):
        m.refuse_inapplicable({unread[0]})
    wrong = [make_image(24, 24, 7)] if m.style == "baked" else []
    match = {"baked": "baked in", "named": "paints named styles"}.get(m.style, "style image is needed")
    with pytest.raises(AtelierError, match=match):
        api.stylize(make_image(40, 60, 1), wrong or None, name, size=32)


def test_unknown_method_lists_the_registered_ones():
    with pytest.raises(AtelierError, match="unknown method 'vangogh'; choose from: .*lite"):
        find("vangogh")


# ----------------------------------------------------------------------------------- generators and teachers


def test_generator_choices_are_the_registry():
    assert tuple(registry.names("generator")) == GENERATORS


@pytest.mark.parametrize("name", registry.names("generator"))
def test_generator_contract_any_size(name):
    g = registry.get("generator", name).factory()()  # the class with its default architecture
    for hw in ((1, 1), (17, 40)):
        with torch.no_grad():
            y = g.eval()(make_image(*hw))
        assert y.shape == (1, 3, *hw) and 0 <= float(y.min()) <= float(y.max()) <= 1


def test_teacher_choices_are_the_registry():
    assert tuple(registry.names("teacher")) == TEACHERS


@pytest.mark.parametrize("name", registry.names("teacher"))
def test_teacher_contract(name):
    options = {"iterations": 2, "scales": "none", "vgg_weights": "random"} if name in ("gatys", "lite") else {}
    if name == "lite":
        options.pop("vgg_weights")
    try:
        teacher = registry.create("teacher", name, options=options, device="cpu", seed=0)
    except AtelierError as e:  # a teacher whose extra is not installed says so in one line
        assert "\n" not in str(e) and "pip install" in str(e), str(e)
        return
    assert isinstance(teacher.identity, str) and teacher.identity
    out = teacher.stylize(make_image(32, 48, 1), make_image(24, 24, 2))
    assert out.shape == (1, 3, 32, 48) and 0 <= float(out.min()) <= float(out.max()) <= 1


# ------------------------------------------------------------------------------- the next engine: toys via the CLI


class ToyNet(FeatureNet):
    """Two named levels of seeded random convs: the smallest feature net that meets the contract."""

    default_content_layers = ("b2",)
    default_style_layers = ("b1", "b2")
    stylize_defaults = {"iterations": 3, "style_weight": 10.0, "tv_weight": 1.0, "scales": "none"}

    def __init__(self, seed: int = 0):
        super().__init__(f"toy:random(seed={seed})")
        torch.manual_seed(seed)
        self.layers["b1"] = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.layers["b2"] = nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.freeze()


def load_toy(weights=None, pooling="max", seed=0, device=None) -> ToyNet:
    return ToyNet(seed).to(device or "cpu")


class ToyOptimise(OptimizeMethod):
    name, description, feature_net = "toy-optimise", "the engine over the toy net", "toy"

    def net_class(self, options):
        return ToyNet


@pytest.fixture
def toys():
    registry.register("feature_net", "toy", load_toy, description="toy net")
    registry.register("method", "toy-optimise", ToyOptimise, description=ToyOptimise.description)
    registry.register("method", "toy-colour", ToyColour, description=ToyColour.description)
    yield
    for kind, name in (("feature_net", "toy"), ("method", "toy-optimise"), ("method", "toy-colour")):
        registry.unregister(kind, name)


def test_a_registered_toy_net_and_one_pass_method_run_through_the_cli(toys, tmp_path, capsys):
    content, style = tmp_path / "photo.png", tmp_path / "art.png"
    save_image(make_image(40, 60, 1), content)
    save_image(torch.ones(1, 3, 24, 24) * torch.tensor([0.9, 0.2, 0.1]).view(1, 3, 1, 1)
               + make_image(24, 24, 2) * 0.1, style)

    out = tmp_path / "colour.png"
    assert main(["stylize", str(content), "--style", str(style), "-m", "toy-colour", "-o", str(out),
                 "--size", "32", "-q"]) == 0
    md = read_metadata(out)
    assert md["method"] == "toy-colour" and md["weights"] == "toy-colour:none" and md["size"] == [21, 32]
    picture = api.stylize(content, style, "toy-colour", size=32).tensor
    assert picture[0, 0].mean() > picture[0, 2].mean() + 0.3  # red, as the style is

    out2 = tmp_path / "optimised.png"
    assert main(["stylize", str(content), "--style", str(style), "--method", "toy-optimise", "-o", str(out2),
                 "--size", "32", "-q"]) == 0
    md2 = read_metadata(out2)
    assert md2["method"] == "toy-optimise" and md2["weights"] == "toy:random(seed=0)" and md2["random_weights"]
    assert md2["evaluations"] == 3 and md2["options"]["style_layers"] == ["b1", "b2"]  # the net's own defaults

    capsys.readouterr()
    assert main(["stylize", str(content), "--style", str(style), "-m", "toy-colour", "-o", str(tmp_path / "x.png"),
                 "--iterations", "5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "atelier: error: --iterations does not apply to one-pass method toy-colour (it reads only " \
                  "device, max_pixels, seed, size, strength, style_scale)"
    assert not (tmp_path / "x.png").exists()

    assert main(["methods"]) == 0
    listed = capsys.readouterr().out
    assert "toy-colour   one-pass" in listed and "toy-optimise optimisation" in listed
    assert any(m["name"] == "toy-colour" and m["kind"] == "one-pass" for m in api.list_methods())


def test_list_methods_is_one_loop_over_the_registry():
    listed = api.list_methods()
    assert [m["name"] for m in listed] == registry.names("method")
    assert json.loads(json.dumps(listed)) == listed  # JSON-ready, as the service serves it
    assert {m["kind"] for m in listed} <= set(KINDS)


def test_a_student_folder_is_found_like_a_name(tmp_path):
    bundled = [n for n in registry.names("method") if find(n).kind == "student"]
    assert bundled, "the bundled student (starry-tiny) is a registered method"
    m = find(bundled[0])
    assert find(str(m.folder)).name == m.name and find(m.folder).name == m.name
    with pytest.raises(AtelierError):
        find(str(tmp_path / "no-such-folder") + "/")
    with pytest.raises(AtelierError, match="a method is"):
        find(3)
    assert StylizeOptions().method == "lite"
